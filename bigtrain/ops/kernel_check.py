"""Parity of the CUDA kernels with the PyTorch reference: forward, backward and double backward
on fresh random inputs, per dtype. `bigtrain kernels --check` prints the table; ``impl="auto"``
runs :func:`quick_parity` once per kernel before trusting it.

The yardstick is the reference run in float64 on the same inputs (rounded to the dtype under
test), not the reference in that dtype: the kernels compute in float32 whatever their inputs, so
in float16/bfloat16 they are often closer to the exact result than the reference is, and a
low-precision reference decides clamp bounds and activation kinks differently from the exact
one. The table shows the reference's own error in the dtype beside the kernel's, for scale."""
from __future__ import annotations

import dataclasses

import torch

from bigtrain.ops.upfirdn2d import is_channels_last

# Relative error allowed (max |kernel - exact| / max |exact|).
THRESHOLDS = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@dataclasses.dataclass
class Row:
    kernel: str
    case: str
    dtype: str
    order: str  # forward | backward | double backward
    rel_err: float  # the kernel's, against the float64 reference
    threshold: float
    ref_err: float = float("nan")  # the reference's own in this dtype, for scale

    @property
    def ok(self) -> bool:
        return self.rel_err <= self.threshold


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _orders(fn, inputs: list[torch.Tensor], dtype: torch.dtype, seed: int):
    """(forward, backward, double backward) outputs of fn(*inputs): the gradient of sum(y * r1)
    w.r.t. the inputs, then of sum(grads * r2) again. r1 and r2 are rounded to ``dtype`` whatever
    the inputs' dtype, so that a float64 run sees the same numbers as a run in ``dtype``."""
    xs = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = fn(*xs)
    g = torch.Generator(device=y.device).manual_seed(seed)

    def noise(like):
        # In the layout of what it multiplies, so that a channels_last case's backward passes also
        # receive channels_last gradients.
        r = torch.randn(like.shape, generator=g, device=y.device, dtype=torch.float32).to(dtype).to(y.dtype)
        return r.contiguous(memory_format=torch.channels_last) if is_channels_last(like) else r
    # r1 is a leaf too: the second order includes the gradient through the backward's incoming
    # gradient (in R1 that gradient depends on the weights), not only through the inputs.
    r1 = noise(y).requires_grad_(True)
    grads = torch.autograd.grad((y * r1).sum(), xs, create_graph=True)
    total = sum((a * noise(a)).sum() for a in grads)
    leaves = [*xs, r1]
    # Where a gradient does not depend on a leaf (a linear op's on its input), it is zero.
    second = torch.autograd.grad(total, leaves, allow_unused=True)
    return y, grads, [s if s is not None else torch.zeros_like(x) for s, x in zip(second, leaves)]


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _cases(device: torch.device, dtype: torch.dtype):
    """(kernel, case name, fn(impl) -> callable, inputs)."""
    from bigtrain.ops.bias_act import bias_act
    from bigtrain.ops.modconv import modulated_conv2d
    from bigtrain.ops.upfirdn2d import setup_filter, upfirdn2d

    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape):
        return torch.randn(shape, generator=g).to(device=device, dtype=dtype)

    f1 = setup_filter([1, 3, 3, 1], device=device)
    f2 = setup_filter(torch.rand(3, 5, generator=g) + 0.1, device=device)
    f6 = setup_filter(torch.rand(6, generator=g) + 0.1, device=device)
    f5 = setup_filter(torch.rand(5, generator=g) + 0.1, device=device)
    f4 = setup_filter(torch.rand(4, generator=g) + 0.1, device=device)  # 4 taps, not symmetric
    # 1-D filters take the tiled kernel (its adjoints too; 4 taps and any other width are separate
    # kernels), 2-D ones the generic kernel. The 37x70 inputs span several 32x32 output tiles, with
    # partial tiles on both edges.
    small, large = (2, 3, 13, 11), (2, 3, 37, 70)
    for name, kw, shape in (("up2 1-D", dict(f=f1, up=2, padding=[2, 1, 2, 1], gain=4), small),
                            ("down2 1-D", dict(f=f1, down=2, padding=[1, 1, 1, 1]), small),
                            ("1-D pad, tiles", dict(f=f1, padding=[2, 1, 1, 2], gain=4), large),
                            ("6 taps down2 flip -gain", dict(f=f6, down=2, padding=[3, 2, 2, 3], flip_filter=True,
                                                              gain=-0.5), large),
                            ("5 taps pad/crop", dict(f=f5, padding=[3, -1, 1, 2]), small),
                            ("2-D 3x5 pad/crop", dict(f=f2, padding=[2, -1, 1, 0], flip_filter=True), small),
                            ("up(2,1) down(1,2) 2-D", dict(f=f2, up=(2, 1), down=(1, 2), padding=[4, 3, 2, 1]), small)):
        yield "upfirdn2d", name, (lambda impl, kw=kw: lambda x: upfirdn2d(x, impl=impl, **kw)), [rnd(*shape)]
    # channels_last inputs (train.channels_last): 1-D filters take the NHWC kernel, in 16-byte channel
    # vectors for 4 taps when the channels allow (8 of them), else one channel at a time; 2-D ones
    # the generic kernel on an NCHW copy.
    for name, kw, shape in (("NHWC up2 1-D, vec", dict(f=f1, up=2, padding=[2, 1, 2, 1], gain=4), (2, 8, 13, 11)),
                            ("NHWC down2 1-D, vec", dict(f=f1, down=2, padding=[1, 1, 1, 1]), (2, 8, 13, 11)),
                            ("NHWC up2 4-tap asym, vec", dict(f=f4, up=2, padding=[1, 2, 2, 1], gain=4), (2, 8, 6, 7)),
                            ("NHWC 1-D pad, 3 ch", dict(f=f1, padding=[2, 1, 1, 2], gain=4), (2, 3, 9, 10)),
                            ("NHWC 6 taps down2 flip", dict(f=f6, down=2, padding=[3, 2, 2, 3], flip_filter=True,
                                                            gain=-0.5), (2, 8, 12, 9)),
                            ("NHWC 2-D 3x5", dict(f=f2, padding=[2, -1, 1, 0]), (2, 8, 7, 6))):
        yield "upfirdn2d", name, (lambda impl, kw=kw: lambda x: upfirdn2d(x, impl=impl, **kw)), [_nhwc(rnd(*shape))]
    # 5x5 planes take the kernel's one-element path, 4x4 planes its 4-element vectors.
    for act, clamp, hw in (("lrelu", None, 5), ("lrelu", 0.5, 5), ("linear", None, 5), ("tanh", None, 5),
                           ("sigmoid", None, 5), ("relu", None, 5), ("elu", None, 5), ("selu", None, 5),
                           ("softplus", None, 5), ("swish", 1.0, 5), ("lrelu", 0.5, 4)):
        x, b = rnd(4, 6, hw, hw), rnd(6)
        x[0, :, 0, 0] = -b  # x + b exactly 0 here: the activations' kinks, with torch's derivatives there
        yield ("bias_act", f"{act}{' clamp' if clamp else ''}{', vec4' if hw == 4 else ''}",
               (lambda impl, act=act, clamp=clamp: lambda x, b: bias_act(x, b, act=act, clamp=clamp, impl=impl)),
               [x, b])
    # channels_last: the bias runs along the innermost dimension, a lookup per element (8 channels,
    # and 6 whose vectors straddle pixels, take the 4-element vectors). [N, C] dense layers are the
    # same case; 5 x 3 elements take the one-element path.
    for act, clamp, c in (("lrelu", 0.5, 8), ("swish", None, 6)):
        x, b = _nhwc(rnd(4, c, 3, 5)), rnd(c)
        x[0, :, 0, 0] = -b
        yield ("bias_act", f"{act}{' clamp' if clamp else ''} NHWC, {c} ch",
               (lambda impl, act=act, clamp=clamp: lambda x, b: bias_act(x, b, act=act, clamp=clamp, impl=impl)),
               [x, b])
    # The modulated convolution's epilogue: a scale per sample and channel and an addend per pixel
    # before the bias (NCHW 4x4 planes take the vectors, 5x5 one element; channels_last 6 channels
    # straddle pixels), then as StyleGAN2's layers call it, through modulated_conv2d.
    for act, clamp, shape, nhwc, shared in (("lrelu", 0.5, (3, 6, 4, 4), False, False),
                                            ("swish", None, (3, 6, 5, 5), False, True),
                                            ("lrelu", 0.5, (3, 6, 3, 5), True, False)):
        x, b, sc = rnd(*shape), rnd(shape[1]), rnd(*shape[:2]).abs() + 0.5
        a = rnd(1 if shared else shape[0], 1, *shape[2:])
        yield ("bias_act", f"{act} *s +a{'[1]' if shared else ''}{' NHWC' if nhwc else ''}",
               (lambda impl, act=act, clamp=clamp: lambda x, b, s, a: bias_act(x, b, act=act, clamp=clamp, impl=impl,
                                                                              scale=s, addend=a)),
               [_nhwc(x) if nhwc else x, b, sc, a])
    # An affine map per sample and channel (a scale and an [N, C] bias: batch norm with a conditional gain
    # and bias, as BigGAN's blocks call it before ReLU): NCHW vectors, one element, 1x1 planes (the
    # channels-innermost walk), channels_last in vectors that cross pixels and samples.
    for name, act, shape, nhwc in (("relu *s b[N,C]", "relu", (3, 6, 4, 4), False),
                                   ("relu *s b[N,C] 1 elem", "relu", (3, 6, 5, 5), False),
                                   ("relu *s b[N,C] 1x1", "relu", (4, 6, 1, 1), False),
                                   ("lrelu *s b[N,C] NHWC", "lrelu", (2, 6, 3, 3), True)):
        x, b, sc = rnd(*shape), rnd(*shape[:2]), rnd(*shape[:2]).abs() + 0.5
        yield ("bias_act", name,
               (lambda impl, act=act: lambda x, b, s: bias_act(x, b, act=act, impl=impl, scale=s)),
               [_nhwc(x) if nhwc else x, b, sc])
    yield ("bias_act", "modconv epilogue",
           (lambda impl: lambda x, w, s, noise, b: modulated_conv2d(
               x, w, s, noise=noise, padding=1, fused_modconv=False, impl=impl, bias=b, act="lrelu",
               act_gain=2 ** 0.5, clamp=1.0)),
           [rnd(2, 8, 4, 4), rnd(5, 8, 3, 3), rnd(2, 8).abs() + 0.5, rnd(2, 1, 4, 4), rnd(5)])
    for n, c, how in ((6, 12, "vec4"), (5, 3, "1 elem")):
        x, b = rnd(n, c), rnd(c)
        yield ("bias_act", f"lrelu [N, C], {how}", (lambda impl: lambda x, b: bias_act(x, b, act="lrelu", impl=impl)),
               [x, b])
    for demod in (True, False):
        yield ("modconv", f"3x3 demod={demod}",
               (lambda impl, demod=demod: lambda x, w, s: modulated_conv2d(x, w, s, padding=1, demodulate=demod,
                                                                          impl=impl)),
               [rnd(2, 8, 6, 6), rnd(5, 8, 3, 3), rnd(2, 8).abs() + 0.5])


def check(device: str = "cuda", dtypes=(torch.float32, torch.float16, torch.bfloat16), kernels=None) -> list[Row]:
    # The float64 yardstick has no TF32, so neither may the float32 runs: cuDNN's convolutions in
    # the modconv cases would use it by default on Ampere and newer (about 3e-4 off, over 1e-4).
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return _check(torch.device(device), dtypes, kernels)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _check(dev: torch.device, dtypes, kernels) -> list[Row]:
    rows = []
    for dtype in dtypes:
        for i, (kernel, case, make, inputs) in enumerate(_cases(dev, dtype)):
            if kernels and kernel not in kernels:
                continue
            exact = _orders(make("ref"), [t.double() for t in inputs], dtype, seed=i)
            ours = _orders(make("cuda"), inputs, dtype, seed=i)
            ref = _orders(make("ref"), inputs, dtype, seed=i)
            t = THRESHOLDS[dtype]
            name = str(dtype).replace("torch.", "")
            for order, j, limit in (("forward", 0, t), ("backward", 1, t), ("double backward", 2, 10 * t)):
                def err(run, j=j):
                    pairs = [(run[0], exact[0])] if j == 0 else zip(run[j], exact[j])
                    return max(_rel(a, b) for a, b in pairs)
                rows.append(Row(kernel, case, name, order, err(ours), limit, err(ref)))
    return rows


def quick_parity(kernel: str) -> str | None:
    """float32 parity of one kernel on the current GPU; None if it holds, else what failed."""
    bad = [r for r in check("cuda", (torch.float32,), kernels={kernel}) if not r.ok]
    if not bad:
        return None
    r = bad[0]
    return f"parity check failed ({r.case}, {r.order}: relative error {r.rel_err:.2e} > {r.threshold:.0e})"


def format_rows(rows: list[Row]) -> str:
    lines = [f"{'kernel':<10} {'case':<24} {'dtype':<9} {'order':<16} {'rel err':>9}  {'limit':>7}  ok   "
             f"{'ref err':>9}"]
    for r in rows:
        lines.append(f"{r.kernel:<10} {r.case:<24} {r.dtype:<9} {r.order:<16} {r.rel_err:9.2e}  {r.threshold:7.0e}  "
                     f"{'yes' if r.ok else 'NO ':<3}  {r.ref_err:9.2e}")
    return "\n".join(lines)
