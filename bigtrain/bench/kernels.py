"""`bigtrain bench kernels`: each CUDA kernel against the reference and the copy-bandwidth floor."""
from __future__ import annotations

import copy
import time

import torch


def _median_time(fn, iters: int, cuda: bool = True) -> float:
    """Median seconds of fn() over iters runs after 3, timed with CUDA events (``cuda=False``: with
    the wall clock, for CPU tensors)."""
    times = []
    for _ in range(iters + 3):
        if not cuda:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            continue
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
    return 2 * nbytes / _median_time(lambda: dst.copy_(src), 10)


def kernel_cases(res: int, batch: int = 8, device: str = "cuda", channels: int | None = None):
    """StyleGAN2 config-f shapes at resolution ``res``: (name, fn(impl, *inputs), inputs, bytes the
    forward must move at least). ``device="cpu"`` and a few ``channels``: the same cases for the CPU
    emulation's test."""
    from bigtrain.ops import bias_act, modulated_conv2d, setup_filter, upfirdn2d

    ch = channels or min(512, 32768 // res)  # config-f channels at this resolution
    f = setup_filter([1, 3, 3, 1], device=device)
    x = torch.randn(batch, ch, res // 2, res // 2, device=device)
    y = torch.randn(batch, ch, res, res, device=device)
    b = torch.randn(ch, device=device)
    w, s = torch.randn(ch, ch, 3, 3, device=device), torch.randn(batch, ch, device=device).abs() + 0.5
    # The modulated convolution's epilogue (StyleGAN2's layers): demodulation coefficients per sample
    # and channel, noise per pixel, then bias, lrelu and the clamp, in one pass. Beside the plain
    # bias_act row of the same tensor: before session 20 a multiply and an add, each a pass like
    # bias_act's own, came first.
    d, noise = torch.rand(batch, ch, device=device) + 0.5, torch.randn(batch, 1, res, res, device=device)
    xs = torch.randn(batch, ch, 16, 16, device=device)
    # BigGAN's conditional batch norm + ReLU, folded (session 21): a scale and a bias per sample and
    # channel, one pass; the reference's float32 multiply-add, cast and ReLU beside it.
    shift = torch.randn(batch, ch, device=device)
    # The FIR filter after G's transposed conv (input res + 1, padded to res) and before D's strided
    # conv; the down2 of D's skips.
    yt = torch.randn(batch, ch, res + 1, res + 1, device=device)
    # The same tensors in channels_last (train.channels_last): the NHWC kernels against the same
    # bytes; the reference runs on them as they are.
    xn, yn = (t.contiguous(memory_format=torch.channels_last) for t in (x, y))
    el = 4  # float32
    return [
        ("upfirdn2d up2", lambda impl, x: upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl=impl), [x],
         (x.numel() + 4 * x.numel()) * el),
        ("upfirdn2d filter", lambda impl, yt: upfirdn2d(yt, f, padding=1, gain=4, impl=impl), [yt],
         (yt.numel() + y.numel()) * el),
        ("upfirdn2d down2", lambda impl, y: upfirdn2d(y, f, down=2, padding=1, impl=impl), [y],
         (y.numel() + y.numel() // 4) * el),
        ("bias_act lrelu", lambda impl, y, b: bias_act(y, b, act="lrelu", impl=impl), [y, b], 2 * y.numel() * el),
        ("bias_act lrelu *s +a", lambda impl, y, b, d, noise: bias_act(y, b, act="lrelu", clamp=256, impl=impl,
                                                                       scale=d, addend=noise),
         [y, b, d, noise], (2 * y.numel() + noise.numel()) * el),
        ("bias_act relu *s b[N,C]", lambda impl, y, t, d: bias_act(y, t, act="relu", gain=1, scale=d, impl=impl),
         [y, shift, d], 2 * y.numel() * el),
        ("upfirdn2d up2 NHWC", lambda impl, x: upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl=impl), [xn],
         (x.numel() + 4 * x.numel()) * el),
        ("upfirdn2d down2 NHWC", lambda impl, y: upfirdn2d(y, f, down=2, padding=1, impl=impl), [yn],
         (y.numel() + y.numel() // 4) * el),
        ("bias_act lrelu NHWC", lambda impl, y, b: bias_act(y, b, act="lrelu", impl=impl), [yn, b], 2 * y.numel() * el),
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
                    row[f"{impl}_fwd_ms"] = 1000 * _median_time(lambda impl=impl: fn(impl, *inputs), iters)
                row[f"{impl}_fwd_bwd_ms"] = 1000 * _median_time(fwd_bwd, iters)
            row["speedup_fwd_bwd"] = row["ref_fwd_bwd_ms"] / row["cuda_fwd_bwd_ms"]
            row["cuda_fwd_bytes_per_s"] = nbytes / (row["cuda_fwd_ms"] / 1000)
            row["x_of_copy_floor"] = bw / row["cuda_fwd_bytes_per_s"]
            rows.append(row)
    return {"device": torch.cuda.get_device_name(), "copy_bytes_per_s": bw, "rows": rows}


def format_kernel_table(r: dict) -> str:
    lines = [f"{r['device']}: copy bandwidth {r['copy_bytes_per_s'] / 1e9:.0f} GB/s",
             f"{'op':<20} {'res':>5} {'cuda f+b ms':>12} {'ref f+b ms':>11} {'speedup':>8} {'fwd GB/s':>9} "
             f"{'x floor':>8}"]
    for row in r["rows"]:
        lines.append(f"{row['op']:<20} {row['resolution']:>5} {row['cuda_fwd_bwd_ms']:>12.3f} "
                     f"{row['ref_fwd_bwd_ms']:>11.3f} {row['speedup_fwd_bwd']:>8.2f} "
                     f"{row['cuda_fwd_bytes_per_s'] / 1e9:>9.0f} {row['x_of_copy_floor']:>8.2f}")
    return "\n".join(lines)


def bench_ema(G: torch.nn.Module, iters: int = 20) -> dict:
    """ms per G_ema update of G (bigtrain.train.ema.update_ema): the loop, two launches per
    parameter, against torch's multi-tensor ops, a few launches for the whole network. On a GPU
    timed with CUDA events, else with the wall clock; the median of ``iters``."""
    from bigtrain.train.ema import update_ema

    ema = copy.deepcopy(G).requires_grad_(False)
    cuda = next(G.parameters()).is_cuda
    out = {"tensors": len(list(G.parameters())) + len(list(G.buffers())),
           "params": sum(p.numel() for p in G.parameters())}
    for name, foreach in (("loop", False), ("foreach", True)):
        out[f"{name}_ms"] = 1000 * _median_time(lambda foreach=foreach: update_ema(ema, G, 0.999, foreach=foreach),
                                              iters, cuda)
    return out


def format_ema(r: dict) -> str:
    return (f"G_ema update ({r['tensors']} tensors, {r['params']:,} parameters): loop {r['loop_ms']:.3f} ms, "
            f"multi-tensor {r['foreach_ms']:.3f} ms ({r['loop_ms'] / r['foreach_ms']:.2f}x)")
