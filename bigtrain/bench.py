"""Benchmarks: measured figures, never assertions. ``bigtrain bench train CONFIG``."""
from __future__ import annotations

import json
import time

import torch

from bigtrain.train.observe import TickStats, peak_memory_gb


def bench_train(trainer, iters: int, warmup: int) -> dict:
    """Time ``iters`` training iterations after ``warmup`` untimed ones (all phases run,
    lazy regularizers at their natural share since steps are counted from 0)."""
    stats = TickStats()
    for _ in range(warmup):
        trainer.train_step(stats)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    nimg0, t0 = trainer.progress.nimg, time.perf_counter()
    for _ in range(iters):
        trainer.train_step(stats)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    sec = time.perf_counter() - t0
    nimg = trainer.progress.nimg - nimg0
    return {
        "config": trainer.cfg.run.dir, "model": trainer.cfg.model,
        "resolution": trainer.model_info["resolution"], "batch_size": trainer.cfg.train.batch_size,
        "world_size": trainer.env.world_size, "device": str(trainer.device),
        "threads": torch.get_num_threads(), "iters": iters, "warmup": warmup,
        "img_per_sec": nimg / sec, "sec_per_kimg": sec / (nimg / 1000),
        "peak_mem_gb": peak_memory_gb(trainer.device),
    }


def format_table(result: dict) -> str:
    rows = [(k, f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in result.items()]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows) + "\n" + json.dumps(result)


# ------------------------------------------------------------------ data loading
class _FolderDataset:
    """The baseline a shard loader must beat: a torch Dataset that opens one image file per
    sample with PIL (what ImageFolder-style loaders do)."""

    def __init__(self, folder: str, channels: int):
        import os
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
    import os

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


def bench_data(source: str, workers: int, batch: int, batches: int, warmup: int, resolution: int | None = None,
               folder: str | None = None, export: bool = False) -> dict:
    """img/s of the shard loader (resampled training stream) and, given ``folder``, of the
    folder-of-PNG baseline over the same images, each with ``workers`` DataLoader workers."""
    from bigtrain.data.shards import ShardDataset, make_loader, open_shards
    shards = open_shards(source)
    res = resolution or shards.resolution
    result: dict = {"source": source, "workers": workers, "batch": batch, "resolution": res,
                    "channels": shards.channels, "image_format": (shards.manifest or {}).get("image_format", "?"),
                    "threads": torch.get_num_threads()}
    ds = ShardDataset(shards, batch, res, shards.channels, "resize", mode="resample", shuffle_buffer=batch * 4)
    n, sec = _time_batches(make_loader(ds, workers), warmup, batches)
    per = max(workers, 1)
    result["shards"] = {"images": n, "sec": sec, "img_per_sec": n / sec, "img_per_sec_per_worker": n / sec / per}
    if folder:
        if export:
            export_folder(shards, folder, res, shards.channels)
        fds = _FolderDataset(folder, shards.channels)
        if len(fds) == 0:
            raise ValueError(f"--folder {folder} holds no .png files (add --export-folder to write them)")
        loader = torch.utils.data.DataLoader(fds, batch_size=batch, shuffle=True, num_workers=workers,
                                             drop_last=True, **({"persistent_workers": False} if workers else {}))
        n, sec = _time_batches(_cycle(loader), warmup, batches)
        result["folder"] = {"images": n, "sec": sec, "img_per_sec": n / sec, "img_per_sec_per_worker": n / sec / per}
        result["shards_vs_folder"] = result["shards"]["img_per_sec"] / result["folder"]["img_per_sec"]
    result["stages_us_per_image"] = profile_stages(shards, res, shards.channels)
    return result


def _cycle(loader):
    while True:
        yield from loader


def format_data_table(r: dict) -> str:
    lines = [f"data bench: {r['source']} ({r['image_format']}, {r['resolution']}px x{r['channels']}), "
             f"{r['workers']} worker(s), batch {r['batch']}"]
    for k in ("shards", "folder"):
        if k in r:
            v = r[k]
            lines.append(f"  {k:<7} {v['img_per_sec']:9.1f} img/s  ({v['img_per_sec_per_worker']:.1f} img/s per worker, "
                         f"{v['images']} images in {v['sec']:.2f} s)")
    if "shards_vs_folder" in r:
        lines.append(f"  shards / folder: {r['shards_vs_folder']:.2f}x")
    s = r["stages_us_per_image"]
    lines.append(f"  one process, us/image: read {s['read_us']:.0f}, decode {s['decode_us']:.0f}, "
                 f"resize (from 2x) {s['resize_from_2x_us']:.0f}, collate {s['collate_us']:.0f}")
    return "\n".join(lines) + "\n" + json.dumps(r)
