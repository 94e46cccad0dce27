"""`bigtrain bench data`, `bigtrain bench crops`: the shard loader against a folder of PNGs."""
from __future__ import annotations

import json
import os
import time

import torch


class _FolderDataset:
    """The baseline a shard loader must beat: a torch Dataset that opens one image file per
    sample with PIL (what ImageFolder-style loaders do)."""

    def __init__(self, folder: str, channels: int):
        self.files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".png"))
        self.channels = channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import numpy as np
        from PIL import Image

        from bigtrain.data.images import to_mode
        with Image.open(self.files[i]) as im:
            arr = np.asarray(to_mode(im, self.channels))
        return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())


def _time_batches(batches, warmup: int, count: int) -> tuple[int, float]:
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(count):
        b = next(it)
        n += len(b["img"] if isinstance(b, dict) else b)
    return n, time.perf_counter() - t0


def export_folder(shards, folder: str, resolution: int, channels: int) -> int:
    """Write every image of the shards as NNNNNNNNN.png into folder (the baseline's input)."""

    from PIL import Image

    from bigtrain.data.shards import read_epoch
    os.makedirs(folder, exist_ok=True)
    n = 0
    for b in read_epoch(shards, 64, resolution, channels, with_keys=True):
        for img, key in zip(b["img"].numpy(), b["keys"]):
            arr = img[0] if channels == 1 else img.transpose(1, 2, 0)
            Image.fromarray(arr).save(os.path.join(folder, f"{key}.png"), compress_level=6)
            n += 1
    return n


def profile_stages(shards, resolution: int, channels: int, samples: int = 256) -> dict:
    """Per-image microseconds in one process: read (untar bytes), decode, resize, collate."""
    import numpy as np

    from bigtrain.data.images import IMAGE_EXTS, decode_image
    from bigtrain.data.shards import _tar_samples
    items, t = [], time.perf_counter()
    for url in shards.urls:
        for s in _tar_samples(url, lambda e: True):
            ext = next((e for e in IMAGE_EXTS if e in s), None)
            if ext:
                items.append((ext, s[ext]))
            if len(items) >= samples:
                break
        if len(items) >= samples:
            break
    read = time.perf_counter() - t
    t = time.perf_counter()
    decoded = [decode_image(e, d, resolution, channels, "resize") for e, d in items]
    decode_resize = time.perf_counter() - t
    # Resize alone: what fitting costs when the stored size differs (2x here, for a figure).
    from PIL import Image
    big = [Image.fromarray(a[0] if channels == 1 else a.transpose(1, 2, 0)).resize((resolution * 2,) * 2)
           for a in decoded[:64]]
    from bigtrain.data.images import fit_image
    t = time.perf_counter()
    for im in big:
        fit_image(im, resolution, "resize")
    resize = (time.perf_counter() - t) / len(big) * len(items)
    t = time.perf_counter()
    for i in range(0, len(decoded), 32):
        torch.from_numpy(np.stack(decoded[i:i + 32]))
    collate = time.perf_counter() - t
    n = len(items)
    return {"samples": n, "read_us": read / n * 1e6, "decode_us": decode_resize / n * 1e6,
            "resize_from_2x_us": resize / n * 1e6, "collate_us": collate / n * 1e6}


def bench_data(sources: list[str], workers: int, batch: int, batches: int, warmup: int,
               resolution: int | None = None, folder: str | None = None, export: bool = False) -> dict:
    """img/s of the shard loader (the resampled training stream) for each source and, given
    ``folder``, of the folder-of-PNG baseline over the same images; all with ``workers``
    DataLoader workers, timed one after another in this one run."""
    from bigtrain.data.shards import ShardDataset, make_loader, open_shards
    all_shards = [open_shards(s) for s in sources]
    res = resolution or all_shards[0].resolution
    channels = all_shards[0].channels
    per = max(workers, 1)
    result: dict = {"workers": workers, "batch": batch, "batches": batches, "resolution": res, "channels": channels,
                    "threads": torch.get_num_threads(), "rows": []}
    if folder and export:
        export_folder(all_shards[0], folder, res, channels)
    for src, shards in zip(sources, all_shards):
        ds = ShardDataset(shards, batch, res, channels, "resize", mode="resample", shuffle_buffer=batch * 4)
        n, sec = _time_batches(make_loader(ds, workers), warmup, batches)
        result["rows"].append({"loader": "shards", "source": src,
                               "format": (shards.manifest or {}).get("image_format", "?"),
                               "images": n, "sec": sec, "img_per_sec": n / sec, "img_per_sec_per_worker": n / sec / per,
                               "stages_us_per_image": profile_stages(shards, res, channels)})
    if folder:
        fds = _FolderDataset(folder, channels)
        if len(fds) == 0:
            raise ValueError(f"--folder {folder} holds no .png files (add --export-folder to write them)")
        loader = torch.utils.data.DataLoader(fds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
        n, sec = _time_batches(_cycle(loader), warmup, batches)
        result["rows"].append({"loader": "folder", "source": folder, "format": "png files", "images": n, "sec": sec,
                               "img_per_sec": n / sec, "img_per_sec_per_worker": n / sec / per})
        base = result["rows"][-1]["img_per_sec"]
        for row in result["rows"]:
            row["vs_folder"] = row["img_per_sec"] / base
    return result


def make_crops(src: str, out: str, count: int, resolution: int, seed: int = 0) -> int:
    """Benchmark input: ``count`` random square crops (scale, position, flip) of the photos
    in ``src``, resized to ``resolution`` (Lanczos) and saved as PNG in ``out``."""
    import random

    from PIL import Image
    photos = []
    for name in sorted(os.listdir(src)):
        try:
            with Image.open(os.path.join(src, name)) as im:
                if min(im.size) >= resolution // 2:
                    photos.append(im.convert("RGB"))
        except OSError:
            continue
    if not photos:
        raise ValueError(f"{src} holds no photos of at least {resolution // 2} px")
    rng = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    for i in range(count):
        im = photos[i % len(photos)]
        side = int(min(im.size) * rng.uniform(0.4, 1.0))
        x, y = rng.randrange(im.size[0] - side + 1), rng.randrange(im.size[1] - side + 1)
        crop = im.crop((x, y, x + side, y + side)).resize((resolution, resolution), Image.Resampling.LANCZOS)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(os.path.join(out, f"{i:06d}.png"), compress_level=6)
    return count


def _cycle(loader):
    while True:
        yield from loader


def format_data_table(r: dict) -> str:
    lines = [f"data bench: {r['resolution']}px x{r['channels']}, {r['workers']} worker(s), batch {r['batch']}, "
             f"{r['batches']} timed batches each",
             f"  {'loader':<7} {'format':<10} {'img/s':>9} {'per worker':>11} {'vs folder':>10}  source"]
    for row in r["rows"]:
        vs = f"{row['vs_folder']:.2f}x" if "vs_folder" in row else "-"
        lines.append(f"  {row['loader']:<7} {row['format']:<10} {row['img_per_sec']:9.1f} "
                     f"{row['img_per_sec_per_worker']:11.1f} {vs:>10}  {row['source']}")
    for row in r["rows"]:
        if "stages_us_per_image" in row:
            s = row["stages_us_per_image"]
            lines.append(f"  {row['format']:<5} one process, us/image: read {s['read_us']:.0f}, decode "
                         f"{s['decode_us']:.0f}, resize (from 2x) {s['resize_from_2x_us']:.0f}, "
                         f"collate {s['collate_us']:.0f}")
    return "\n".join(lines) + "\n" + json.dumps(r)
