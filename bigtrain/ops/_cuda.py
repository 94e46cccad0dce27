"""Autograd around the CUDA kernels: each op's backward is built from the kernels again (or from
plain differentiable torch ops), so second-order gradients (R1, path length) work.

Functions are created once per static configuration (up/down/padding/filter flags, activation,
gain, clamp) and cached, so a training step does not rebuild them.
"""
from __future__ import annotations

import functools

import torch

from bigtrain.ops import _build

# Activation ids shared with kernels/bias_act.cu.
CUDA_ACT_IDS = {"linear": 0, "relu": 1, "lrelu": 2, "tanh": 3, "sigmoid": 4, "elu": 5, "selu": 6, "softplus": 7,
                "swish": 8}
# Activations whose second derivative is zero everywhere: their double backward needs no kernel.
_PIECEWISE_LINEAR = {"linear", "relu", "lrelu"}


def kernel(name: str):
    """The compiled module for ``name`` (tests put an emulator here to check the autograd on CPU)."""
    return _build.load(name)


# Forward calls of each kernel's op in this process (for reports: which kernels a stretch of work
# used; `bigtrain bench gpu` records them per training row).
_calls: dict[str, int] = {}


def _count(name: str) -> None:
    _calls[name] = _calls.get(name, 0) + 1


def kernel_calls() -> dict[str, int]:
    """Kernel name -> how many times its op ran the kernel (forward) in this process. Compare two
    snapshots to see what a stretch of work used."""
    return dict(_calls)


# ---------------------------------------------------------------------------------------- upfirdn2d


def adjoint_padding(f_shape, in_hw, out_hw, up, down, pad) -> tuple[int, int, int, int]:
    """Padding of the adjoint upfirdn2d: per axis, the first output sample of the forward pass
    took taps from input position -p0, so the adjoint starts ``taps - 1 - p0`` earlier, and
    the end is chosen so that the adjoint's output has exactly the forward input's size."""
    (fh, fw), (in_h, in_w), (out_h, out_w) = f_shape, in_hw, out_hw
    return (fw - pad[0] - 1, in_w * up[0] - out_w * down[0] + pad[0] - up[0] + 1,
            fh - pad[2] - 1, in_h * up[1] - out_h * down[1] + pad[2] - up[1] + 1)


# The kernel's tiled path for separable filters (kernels/launch.h, upfirdn2d_separable_supported):
# up to this many taps, the same up (1 or 2) and down (1 or 2) on both axes, not both 2. Every
# call StyleGAN2 makes, and the adjoint of each such call is one too.
SEPARABLE_MAX_TAPS = 16


def separable_supported(taps: int, up: tuple, down: tuple) -> bool:
    return (1 <= taps <= SEPARABLE_MAX_TAPS and up[0] == up[1] <= 2 and down[0] == down[1] <= 2
            and (up[0] == 1 or down[0] == 1))


@functools.lru_cache(maxsize=None)
def _upfirdn2d_function(up: tuple, down: tuple, pad: tuple, flip_filter: bool, gain: float):
    """Function for one (up=(ux, uy), down, pad=(x0, x1, y0, y1), flip, gain); f is a float32 input,
    2-D, or 1-D (separable, applied along both axes) where :func:`separable_supported`."""

    class UpFirDn2d(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, f):
            ctx.save_for_backward(f)
            ctx.in_hw = x.shape[2:]
            return kernel("upfirdn2d").upfirdn2d(x, f, up[0], up[1], down[0], down[1], *pad, flip_filter, gain)

        @staticmethod
        def backward(ctx, dy):
            # The adjoint of upfirdn2d is upfirdn2d with up and down swapped, the filter flipped and
            # the padding mirrored so that the output has the input's size.
            (f,) = ctx.saved_tensors
            f_shape = (f.shape[0], f.shape[-1])  # a 1-D filter has its taps on both axes
            gpad = adjoint_padding(f_shape, tuple(ctx.in_hw), tuple(dy.shape[2:]), up, down, pad)
            dx = _upfirdn2d_function(down, up, gpad, not flip_filter, gain).apply(dy, f)
            return dx, None

    return UpFirDn2d


def upfirdn2d_cuda(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain):
    _count("upfirdn2d")
    if f is None:
        f = torch.ones([1, 1], device=x.device)
    f = f.to(device=x.device, dtype=torch.float32)
    if f.ndim == 2:
        return _upfirdn2d_function((upx, upy), (downx, downy), (padx0, padx1, pady0, pady1), flip_filter,
                                   float(gain)).apply(x, f)
    if separable_supported(f.shape[0], (upx, upy), (downx, downy)):
        # One tiled kernel for both axes.
        return _upfirdn2d_function((upx, upy), (downx, downy), (padx0, padx1, pady0, pady1), flip_filter,
                                   float(gain)).apply(x, f)
    # Other separable cases: along x (with the whole gain, so negative gains work), then along y.
    x = _upfirdn2d_function((upx, 1), (downx, 1), (padx0, padx1, 0, 0), flip_filter, float(gain)).apply(x, f[None, :])
    return _upfirdn2d_function((1, upy), (1, downy), (0, 0, pady0, pady1), flip_filter, 1.0).apply(x, f[:, None])


# ----------------------------------------------------------------------------------------- bias_act


def _reduce_to_bias(t: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    if b.ndim == 2:  # per sample and channel, for a 4-D t with dim 1
        return t.sum(dim=[2, 3])
    dims = [d for d in range(t.ndim) if d != dim]
    return t.sum(dim=dims) if dims else t  # sum(dim=[]) would reduce everything


def _epilogue_grads(g, x, b, s, a, dim: int, needs):
    """Gradients of u = x * s + a + b w.r.t. (x, b, s, a), given g = dL/du; None where not needed or
    absent. Plain torch ops, so that they are differentiable again."""
    d_x = (g if s is None else g * s.to(g.dtype)[:, :, None, None]) if needs[0] else None  # in x's dtype
    d_b = _reduce_to_bias(g, b, dim) if b is not None and needs[1] else None
    d_s = (g * x).sum(dim=[2, 3]) if s is not None and needs[2] else None
    d_a = g.sum_to_size(a.shape) if a is not None and needs[3] else None
    return d_x, d_b, d_s, d_a


@functools.lru_cache(maxsize=None)
def _bias_act_functions(dim: int, act: str, alpha: float, gain: float, clamp: float):
    """BiasAct(x, b, s, a): the op on u = x * s + a + b (s [N, C] and a [N or 1, 1, H, W] optional:
    the modulated convolution's epilogue, see kernels/bias_act.cu; b 1-D, or [N, C] per sample), with a
    backward that is
    differentiable again. The kernel returns derivatives w.r.t. u; the chain through u's terms is
    torch's."""
    act_id = CUDA_ACT_IDS[act]

    def run(x, b, s, a, dy, ddx, mode):
        return kernel("bias_act").bias_act(x, b, s, a, dy, ddx, dim, act_id, mode, alpha, gain, clamp)

    class BiasActGrad(torch.autograd.Function):
        """du = dy * y'(u): the backward of BiasAct, itself differentiable."""

        @staticmethod
        def forward(ctx, dy, x, b, s, a):
            ctx.save_for_backward(dy, x, b, s, a)
            return run(x, b, s, a, dy, None, 1)

        @staticmethod
        def backward(ctx, ddu):
            dy, x, b, s, a = ctx.saved_tensors
            d_dy = BiasActGrad.apply(ddu, x, b, s, a) if ctx.needs_input_grad[0] else None
            # ddu * dy * y''(u), then on to u's terms. For piecewise-linear activations (lrelu: StyleGAN2's
            # layers) y'' is zero: None says so without full-size passes over zeros (every path-length
            # step goes through here once per layer). Third order is not supported.
            if act in _PIECEWISE_LINEAR or not any(ctx.needs_input_grad[1:]):
                return d_dy, None, None, None, None
            g = run(x, b, s, a, dy, ddu, 2)
            return (d_dy, *_epilogue_grads(g, x, b, s, a, dim, ctx.needs_input_grad[1:]))

    class BiasAct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b, s, a):
            ctx.save_for_backward(x, b, s, a)
            return run(x, b, s, a, None, None, 0)

        @staticmethod
        def backward(ctx, dy):
            x, b, s, a = ctx.saved_tensors
            du = BiasActGrad.apply(dy, x, b, s, a)
            return _epilogue_grads(du, x, b, s, a, dim, ctx.needs_input_grad)

    return BiasAct


def bias_act_cuda(x, b, dim, act, alpha, gain, clamp, scale=None, addend=None):
    """``scale`` [N, C] and ``addend`` [N or 1, 1, H, W] (bias_act.py checks and shapes them) are
    applied before the bias (1-D, or [N, C] per sample), in the same kernel. The kernel reads the
    three in float32 whatever x's dtype (kernels/bias_act.cu says why)."""
    _count("bias_act")
    b, scale, addend = (t if t is None else t.float() for t in (b, scale, addend))
    return _bias_act_functions(dim, act, float(alpha or 0.0), float(gain), float(clamp)).apply(x, b, scale, addend)


# ------------------------------------------------------------------------------------------ modconv


class _ModulateWeight(torch.autograd.Function):
    """w[n,o,i,k] = weight[o,i,k] * styles[n,i] * d[n,o], d = rsqrt(sum_{i,k} (weight*styles)^2 + eps)
    (d = 1 without demodulation) in one kernel; the backward is plain torch ops, so it is
    differentiable again (path-length regularization differentiates through G twice)."""

    @staticmethod
    def forward(ctx, weight, styles, demodulate, eps):
        w, _ = kernel("modconv").modulate_weight(weight, styles, demodulate, eps)
        ctx.save_for_backward(weight, styles)
        ctx.demodulate, ctx.eps = demodulate, eps
        return w

    @staticmethod
    def backward(ctx, gw):
        # Recomputed with torch ops (not the kernel's d), so that this backward is itself
        # differentiable in weight and styles.
        weight, styles = ctx.saved_tensors
        s = styles[:, None, :, None, None].float()
        a = weight[None].float() * s  # [N, O, I, kh, kw]
        gw = gw.float()
        if ctx.demodulate:
            d = (a.square().sum(dim=[2, 3, 4], keepdim=True) + ctx.eps).rsqrt()
            # w = a * d, d = (sum a^2 + eps)^-1/2  =>  dL/da = d * g - d^3 * a * sum(g * a)
            ga = gw * d - d.pow(3) * a * (gw * a).sum(dim=[2, 3, 4], keepdim=True)
        else:
            ga = gw
        g_weight = (ga * s).sum(0).to(weight.dtype)
        g_styles = (ga * weight[None].float()).sum(dim=[1, 3, 4]).to(styles.dtype)
        return g_weight, g_styles, None, None


def modulate_weight_cuda(weight, styles, demodulate: bool, eps: float):
    _count("modconv")
    return _ModulateWeight.apply(weight, styles, demodulate, eps)
