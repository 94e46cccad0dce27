"""Benchmarks: measured figures, never assertions. ``bigtrain bench train CONFIG``."""
from __future__ import annotations

import json
import os
import time

import torch

from bigtrain.train.observe import TickStats, peak_memory_gb


def time_steps(trainer, stats: TickStats, iters: int, deadline: float | None = None) -> tuple[int, float, int]:
    """Run ``iters`` training iterations and time them by the wall clock, synchronised with the
    GPU at both ends; with a ``deadline`` (time.perf_counter()), stop after the iteration that
    passes it (at least one runs). Returns (iterations run, seconds, images)."""
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    nimg0, t0, done = trainer.progress.nimg, time.perf_counter(), 0
    while done < iters:
        trainer.train_step(stats)
        done += 1
        if deadline is not None and time.perf_counter() > deadline:
            break
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return done, time.perf_counter() - t0, trainer.progress.nimg - nimg0


def bench_train(trainer, iters: int, warmup: int) -> dict:
    """Time ``iters`` training iterations after ``warmup`` untimed ones (all phases run,
    lazy regularizers at their natural share since steps are counted from 0)."""
    stats = TickStats()
    for _ in range(warmup):
        trainer.train_step(stats)
    _, sec, nimg = time_steps(trainer, stats, iters)
    return {
        "config": trainer.cfg.run.dir, "model": trainer.cfg.model,
        "resolution": trainer.model_info["resolution"], "batch_size": trainer.cfg.train.batch_size,
        "world_size": trainer.env.world_size, "device": str(trainer.device),
        "threads": torch.get_num_threads(), "iters": iters, "warmup": warmup,
        "img_per_sec": nimg / sec, "sec_per_kimg": sec / (nimg / 1000),
        "peak_mem_gb": peak_memory_gb(trainer.device),
        "strategy": trainer.cfg.distributed.strategy, "zero_stage": trainer.cfg.distributed.zero_stage,
        "rank": trainer.env.rank,
        "bytes_per_rank": {name: trainer.strategy.memory_bytes(w) for name, w in trainer.wrapped.items()},
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
    import os
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


# ------------------------------------------------------------------------------------ CUDA kernels


def _cuda_time(fn, iters: int) -> float:
    """Median seconds of fn() over iters runs, timed with CUDA events."""
    times = []
    for _ in range(iters + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times[3:])[iters // 2]


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Bytes/s of a device-to-device copy (read + write counted): the floor for memory-bound ops."""
    src = torch.empty(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    return 2 * nbytes / _cuda_time(lambda: dst.copy_(src), 10)


def kernel_cases(res: int, batch: int = 8):
    """StyleGAN2 config-f shapes at resolution ``res``: (name, fn(impl, *inputs), inputs, bytes the
    forward must move at least)."""
    from bigtrain.ops import bias_act, modulated_conv2d, setup_filter, upfirdn2d

    ch = min(512, 32768 // res)  # config-f channels at this resolution
    f = setup_filter([1, 3, 3, 1], device="cuda")
    x = torch.randn(batch, ch, res // 2, res // 2, device="cuda")
    y = torch.randn(batch, ch, res, res, device="cuda")
    b = torch.randn(ch, device="cuda")
    w, s = torch.randn(ch, ch, 3, 3, device="cuda"), torch.randn(batch, ch, device="cuda").abs() + 0.5
    xs = torch.randn(batch, ch, 16, 16, device="cuda")
    # The FIR filter after G's transposed conv (input res + 1, padded to res) and before D's strided
    # conv; the down2 of D's skips.
    yt = torch.randn(batch, ch, res + 1, res + 1, device="cuda")
    el = 4  # float32
    return [
        ("upfirdn2d up2", lambda impl, x: upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl=impl), [x],
         (x.numel() + 4 * x.numel()) * el),
        ("upfirdn2d filter", lambda impl, yt: upfirdn2d(yt, f, padding=1, gain=4, impl=impl), [yt],
         (yt.numel() + y.numel()) * el),
        ("upfirdn2d down2", lambda impl, y: upfirdn2d(y, f, down=2, padding=1, impl=impl), [y],
         (y.numel() + y.numel() // 4) * el),
        ("bias_act lrelu", lambda impl, y, b: bias_act(y, b, act="lrelu", impl=impl), [y, b], 2 * y.numel() * el),
        ("modconv weights", lambda impl, w, s: modulated_conv2d(xs, w, s, padding=1, impl=impl), [w, s],
         (w.numel() + batch * w.numel()) * el),
    ]


def bench_kernels(resolutions=(256, 1024), iters: int = 20) -> dict:
    """Per op and resolution: forward and forward+backward ms with the kernel and the reference,
    and the kernel's forward bytes/s against the copy bandwidth (the floor for these ops)."""
    if not torch.cuda.is_available():
        raise ValueError("bench kernels needs a GPU; none is visible")
    bw = copy_bandwidth()
    rows = []
    for res in resolutions:
        for name, fn, inputs, nbytes in kernel_cases(res):
            row = {"op": name, "resolution": res}
            leaves = [t.detach().requires_grad_(True) for t in inputs]
            for impl in ("cuda", "ref"):
                def fwd_bwd(impl=impl):
                    torch.autograd.grad(fn(impl, *leaves).square().mean(), leaves)
                with torch.no_grad():
                    row[f"{impl}_fwd_ms"] = 1000 * _cuda_time(lambda impl=impl: fn(impl, *inputs), iters)
                row[f"{impl}_fwd_bwd_ms"] = 1000 * _cuda_time(fwd_bwd, iters)
            row["speedup_fwd_bwd"] = row["ref_fwd_bwd_ms"] / row["cuda_fwd_bwd_ms"]
            row["cuda_fwd_bytes_per_s"] = nbytes / (row["cuda_fwd_ms"] / 1000)
            row["x_of_copy_floor"] = bw / row["cuda_fwd_bytes_per_s"]
            rows.append(row)
    return {"device": torch.cuda.get_device_name(), "copy_bytes_per_s": bw, "rows": rows}


def format_kernel_table(r: dict) -> str:
    lines = [f"{r['device']}: copy bandwidth {r['copy_bytes_per_s'] / 1e9:.0f} GB/s",
             f"{'op':<17} {'res':>5} {'cuda f+b ms':>12} {'ref f+b ms':>11} {'speedup':>8} {'fwd GB/s':>9} "
             f"{'x floor':>8}"]
    for row in r["rows"]:
        lines.append(f"{row['op']:<17} {row['resolution']:>5} {row['cuda_fwd_bwd_ms']:>12.3f} "
                     f"{row['ref_fwd_bwd_ms']:>11.3f} {row['speedup_fwd_bwd']:>8.2f} "
                     f"{row['cuda_fwd_bytes_per_s'] / 1e9:>9.0f} {row['x_of_copy_floor']:>8.2f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- generation from an export
def bench_generate(folder: str, batch: int = 64, rounds: int = 5, threads: int | None = None) -> dict:
    """Images/s of one exported generator run three ways on the CPU, side by side: PyTorch
    (bigtrain.load_generator), TorchScript and ONNX Runtime (whichever the export holds), the same
    inputs, in interleaved rounds so machine noise hits all alike; the median round counts."""
    import statistics

    from bigtrain.export import load_generator
    from bigtrain.export.graph import Sampler, example_inputs, onnx_session
    from bigtrain.export.run import FILES

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    G, config = load_generator(folder)
    sampler = Sampler(G, config["family"]).eval()
    args = example_inputs(sampler, batch, None, seed=0)
    runners = {"pytorch": lambda: sampler(*args)}
    files = config.get("files", {})  # which graphs the export holds; their names are fixed
    if "torchscript" in files:
        ts = torch.jit.load(os.path.join(folder, FILES["torchscript"]))
        runners["torchscript"] = lambda: ts(*args)
    if "onnx" in files:
        sess = onnx_session(os.path.join(folder, FILES["onnx"]), threads)
        feeds = {n: a.numpy() for n, a in zip(sampler.input_names(), args)}
        runners["onnxruntime"] = lambda: sess.run(["img"], feeds)
    times: dict[str, list[float]] = {k: [] for k in runners}
    with torch.no_grad():
        for fn in runners.values():  # warm-up: allocation, graph optimisation (TorchScript's profiling
            for _ in range(3):       # executor specialises on the second call)
                fn()
        for _ in range(rounds):
            for k, fn in runners.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"export": folder, "family": config["family"], "resolution": config["resolution"], "batch": batch,
            "threads": threads, "rounds": rounds,
            "img_per_sec": {k: batch / v for k, v in med.items()},
            "vs_pytorch": {k: med["pytorch"] / v for k, v in med.items()}}


def format_generate_table(r: dict) -> str:
    lines = [f"{r['family']} {r['resolution']}x{r['resolution']}, batch {r['batch']}, {r['threads']} thread(s), "
             f"median of {r['rounds']} interleaved rounds",
             f"{'runtime':<14}{'img/s':>10}{'vs pytorch':>12}"]
    for k, v in r["img_per_sec"].items():
        lines.append(f"{k:<14}{v:>10.1f}{r['vs_pytorch'][k]:>11.2f}x")
    return "\n".join(lines)
