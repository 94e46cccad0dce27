"""2-D convolutions whose gradients of every order are convolutions of the ordinary kinds.

R1, path-length and gradient-penalty regularisers differentiate through the backward pass of
every convolution (``create_graph=True``). Autograd's generic double backward computes the
weight's share of that second-order gradient as a convolution of the transposed activations
with the transposed output gradient: a kernel as large as the feature map (256x256 at the top
of a StyleGAN2-256 discriminator), for which cuDNN has only slow algorithms. Here the weight
gradient is its own differentiable op that calls the weight-gradient kernel, the one every
first-order backward uses, and its own gradients are forward and transposed convolutions
again, so every order runs on the algorithms cuDNN tunes for training.

:func:`conv2d` and :func:`conv_transpose2d` equal ``torch.nn.functional``'s (no bias, no
dilation) in value and in gradients of every order, up to the rounding of a different
summation order. They take their own autograd only inside :func:`second_order`, around the forward
passes that a regulariser will differentiate twice (the losses open it); elsewhere, where no gradient
is recorded, under tracing, scripting, ONNX export and ``torch.compile``, and when the process chose
``set_double_backward("autograd")`` (the trainer's ``train.conv_double_backward``), they are the
plain functions, exactly, at no cost.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F

MODES = ("wgrad", "autograd")
_mode = "wgrad"


def set_double_backward(mode: str) -> None:
    """``"wgrad"``: the ops of this module (the default); ``"autograd"``: plain ``F.conv2d`` and
    ``F.conv_transpose2d`` with autograd's own higher-order gradients (for comparison)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"conv double backward: unknown mode {mode!r}; expected one of {', '.join(map(repr, MODES))}")
    _mode = mode


def double_backward_mode() -> str:
    return _mode


_regions = 0


@contextlib.contextmanager
def second_order() -> Iterator[None]:
    """Convolutions run inside take the custom autograd (in mode ``"wgrad"``): open it around a
    forward pass whose graph will be differentiated with ``create_graph=True``. Only the forward
    pass needs to be inside; the backward passes follow the graph it recorded."""
    global _regions
    _regions += 1
    try:
        yield
    finally:
        _regions -= 1


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


class _Spec(NamedTuple):
    """One convolution's geometry: ``y = op(x, w)``, linear in ``x`` and in ``w``."""
    transposed: bool
    stride: tuple[int, int]
    padding: tuple[int, int]
    output_padding: tuple[int, int]
    groups: int

    def run(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose2d(x, w, None, self.stride, self.padding, self.output_padding, self.groups)
        return F.conv2d(x, w, None, self.stride, self.padding, 1, self.groups)

    def adjoint(self, x_shape, y_shape, w_shape) -> "_Spec":
        """The op that maps ``dL/dy`` to ``dL/dx`` with the same weight (the input gradient)."""
        if self.transposed:
            return _Spec(False, self.stride, self.padding, (0, 0), self.groups)
        # conv_transpose2d's output size is (in - 1) * s - 2p + k + output_padding; pick the
        # output_padding that gives back x's size (the rows a strided conv never read).
        op = tuple(int(x_shape[2 + i]) - ((int(y_shape[2 + i]) - 1) * self.stride[i] - 2 * self.padding[i]
                                          + int(w_shape[2 + i])) for i in range(2))
        return _Spec(True, self.stride, self.padding, op, self.groups)

    def weight_grad(self, gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``dL/dw`` from ``dL/dy`` and ``x``: the weight-gradient kernel alone."""
        return torch.ops.aten.convolution_backward(
            gy, x, w, None, list(self.stride), list(self.padding), [1, 1], self.transposed,
            list(self.output_padding), self.groups, [False, True, False])[1]


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, spec: _Spec):
        ctx.save_for_backward(x, w)
        ctx.spec = spec
        return spec.run(x, w)

    @staticmethod
    def backward(ctx, gy):
        # The forward ran without autocast (see _run); so do the gradients, whatever autocast the
        # caller of autograd.grad is in (R1's runs inside the training step's).
        with torch.autocast(gy.device.type, enabled=False):
            return _Conv._backward(ctx, gy)

    @staticmethod
    def _backward(ctx, gy):
        x, w = ctx.saved_tensors
        spec: _Spec = ctx.spec
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not torch.is_grad_enabled():
            # First order only (no create_graph): one call computes both, as F.conv2d's backward does.
            gx, gw, _ = torch.ops.aten.convolution_backward(
                gy, x, w, None, list(spec.stride), list(spec.padding), [1, 1], spec.transposed,
                list(spec.output_padding), spec.groups, [need_x, need_w, False])
            return gx, gw, None
        gx = _Conv.apply(gy, w, spec.adjoint(x.shape, gy.shape, w.shape)) if need_x else None
        gw = _WeightGrad.apply(gy, x, w.detach(), spec) if need_w else None
        return gx, gw, None


class _WeightGrad(torch.autograd.Function):
    """``gw = wgrad(gy, x)``: bilinear in ``gy`` and ``x``; its gradients are ``op(x, ggw)`` for
    ``gy`` and ``adjoint(gy, ggw)`` for ``x``."""

    @staticmethod
    def forward(ctx, gy, x, w, spec: _Spec):
        ctx.save_for_backward(gy, x)
        ctx.spec = spec
        return spec.weight_grad(gy, x, w)

    @staticmethod
    def backward(ctx, ggw):
        gy, x = ctx.saved_tensors
        spec: _Spec = ctx.spec
        with torch.autocast(ggw.device.type, enabled=False):
            ggy = _Conv.apply(x, ggw, spec) if ctx.needs_input_grad[0] else None
            gx = _Conv.apply(gy, ggw, spec.adjoint(x.shape, gy.shape, ggw.shape)) if ctx.needs_input_grad[1] else None
        return ggy, gx, None, None


def _plain(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Outside a second-order region, or where the custom autograd ops would only get in the way."""
    return (not _regions or _mode != "wgrad" or not (x.requires_grad or w.requires_grad)
            or not torch.is_grad_enabled() or torch.jit.is_scripting() or torch.jit.is_tracing()
            or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())


def _run(x: torch.Tensor, w: torch.Tensor, spec: _Spec) -> torch.Tensor:
    if _plain(x, w):
        return spec.run(x, w)
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        # Cast as autocast would (the casts stay on the tape), then run the op without it:
        # its backward must see the dtypes its forward saw.
        dtype = torch.get_autocast_dtype(dev)
        x = x.to(dtype) if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else x
        w = w.to(dtype) if w.dtype in (torch.float32, torch.float16, torch.bfloat16) else w
        with torch.autocast(dev, enabled=False):
            return _Conv.apply(x, w, spec)
    return _Conv.apply(x, w, spec)


def conv2d(x: torch.Tensor, w: torch.Tensor, stride=1, padding=0, groups: int = 1) -> torch.Tensor:
    """``F.conv2d(x, w, None, stride, padding, 1, groups)`` with fast gradients of every order.

    Args:
        x: Input ``[N, C, H, W]``.
        w: Weight ``[O, C // groups, kh, kw]``.
        stride: int or ``(sy, sx)``.
        padding: int or ``(py, px)``, zeros on both sides.
        groups: Convolution groups.

    Returns:
        ``[N, O, H_out, W_out]``, as ``F.conv2d``.
    """
    return _run(x, w, _Spec(False, _pair(stride), _pair(padding), (0, 0), int(groups)))


def conv_transpose2d(x: torch.Tensor, w: torch.Tensor, stride=1, padding=0, output_padding=0,
                     groups: int = 1) -> torch.Tensor:
    """``F.conv_transpose2d(x, w, None, stride, padding, output_padding, groups)`` with fast
    gradients of every order; ``w`` is ``[C, O // groups, kh, kw]`` as there."""
    return _run(x, w, _Spec(True, _pair(stride), _pair(padding), _pair(output_padding), int(groups)))
