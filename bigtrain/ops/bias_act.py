"""Fused bias + activation + gain + clamp."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from bigtrain.ops._impl import resolve_impl


@dataclass(frozen=True)
class ActSpec:
    """An activation supported by :func:`bias_act`.

    Attributes:
        name: Key in :data:`ACTIVATIONS`.
        func: ``func(x, alpha) -> y``; ``alpha`` is ``None`` unless ``def_alpha`` is set.
        def_alpha: Default ``alpha``, or ``None`` if the activation takes none.
        def_gain: Default output gain; chosen so a layer keeps roughly unit
            second moment under He-style init (``sqrt(2)`` for half-rectifiers).
    """

    name: str
    func: Callable[[torch.Tensor, float | None], torch.Tensor]
    def_alpha: float | None
    def_gain: float


ACTIVATIONS: dict[str, ActSpec] = {
    spec.name: spec
    for spec in [
        ActSpec("linear", lambda x, _: x, None, 1.0),
        ActSpec("relu", lambda x, _: F.relu(x), None, math.sqrt(2)),
        ActSpec("lrelu", lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
        ActSpec("tanh", lambda x, _: torch.tanh(x), None, 1.0),
        ActSpec("sigmoid", lambda x, _: torch.sigmoid(x), None, 1.0),
        ActSpec("elu", lambda x, _: F.elu(x), None, 1.0),
        ActSpec("selu", lambda x, _: F.selu(x), None, 1.0),
        ActSpec("softplus", lambda x, _: F.softplus(x), None, 1.0),
        ActSpec("swish", lambda x, _: F.silu(x), None, math.sqrt(2)),
    ]
}


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
    *,
    scale: torch.Tensor | None = None,
    addend: torch.Tensor | None = None,
) -> torch.Tensor:
    """Compute ``clamp(act(x * scale + addend + b, alpha) * gain, -clamp, clamp)``.

    ``scale`` and ``addend`` (optional) are the modulated convolution's epilogue, StyleGAN2's
    demodulation coefficients and noise (:func:`~bigtrain.ops.modulated_conv2d` passes them): the
    kernel applies them in its one pass, where the reference takes a pass for each. A ``scale`` and
    a per-sample bias ``b`` ([N, C]) make any affine map per sample and channel: batch norm with a
    conditional gain and bias after it (BigGAN's), folded into one pass with its activation.

    Args:
        x: Input of any shape.
        b: Optional bias: 1-D of length ``x.shape[dim]``, broadcast along ``dim``; or, for a 4-D
            ``x`` with ``dim`` 1, ``[N, C]``, one per sample and channel.
        dim: Dimension of ``x`` that ``b`` indexes (negative values allowed).
        act: One of the keys of :data:`ACTIVATIONS`.
        alpha: Activation parameter; only ``lrelu`` takes one (negative
            slope, default 0.2). Passing it to other activations is an error.
        gain: Output scale; ``None`` uses the activation's ``def_gain``.
        clamp: Clamp the result to ``[-clamp, clamp]``; ``None`` or a negative
            value disables clamping.
        impl: ``"auto"``, ``"ref"`` or ``"cuda"``.
        scale: ``[N, C]``, one factor per sample and channel, for a 4-D ``x`` with ``dim`` 1.
        addend: One value per pixel, the same for every channel: ``[N, 1, H, W]``, or shared by
            the samples, ``[1, 1, H, W]`` or ``[H, W]``; for a 4-D ``x`` with ``dim`` 1.

    Returns:
        Tensor with the shape and dtype of ``x``. The kernel reads ``b``, ``scale`` and ``addend`` in
        float32; the reference casts them to ``x.dtype``, except with an ``[N, C]`` bias, where it
        computes ``x * scale + addend + b`` in float32 and rounds it once.
    """
    spec = ACTIVATIONS.get(act)
    if spec is None:
        raise ValueError(f"bias_act: unknown act={act!r}; expected one of {', '.join(ACTIVATIONS)}")
    if alpha is not None and spec.def_alpha is None:
        raise ValueError(f"bias_act: act={act!r} takes no alpha, got alpha={alpha!r}")
    if b is not None or scale is not None or addend is not None:
        if not -x.ndim <= dim < x.ndim:
            raise ValueError(f"bias_act: dim={dim} is out of range for x with {x.ndim} dims")
        dim = dim % x.ndim
    if b is not None and b.ndim == 2:
        if x.ndim != 4 or dim != 1 or tuple(b.shape) != tuple(x.shape[:2]):
            raise ValueError(f"bias_act: a 2-D b must be [N, C] for a 4-D x [N, C, H, W] with dim=1, got b of "
                             f"shape {tuple(b.shape)}, x of shape {tuple(x.shape)} and dim={dim}")
    elif b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
        raise ValueError(
            f"bias_act: b must be 1-D with x.shape[{dim}]={x.shape[dim]} entries, got shape {tuple(b.shape)}"
        )
    if scale is not None or addend is not None:
        scale, addend = _check_epilogue(x, dim, scale, addend)
    alpha = spec.def_alpha if alpha is None else float(alpha)
    gain = spec.def_gain if gain is None else float(gain)
    clamp = -1.0 if clamp is None else float(clamp)
    if resolve_impl(impl, x, "bias_act") == "cuda":
        from bigtrain.ops._cuda import bias_act_cuda
        return bias_act_cuda(x, b, dim, act, alpha, gain, clamp, scale, addend)
    if b is not None and b.ndim == 2:
        # An affine map per sample and channel (a folded batch norm): its scale and shift can be large
        # and cancel (a channel whose mean is large against its spread), so u is computed in float32
        # and rounded to x's dtype once, as the kernel does.
        wide = torch.promote_types(x.dtype, torch.float32)
        s = scale.to(wide)[:, :, None, None] if scale is not None else torch.ones((), dtype=wide, device=x.device)
        u = torch.addcmul(b.to(wide)[:, :, None, None], x, s)
        if addend is not None:
            u = u + addend.to(wide)
        return _bias_act_ref(u.to(x.dtype), None, dim, spec, alpha, gain, clamp)
    if scale is not None:
        x = x * scale.to(x.dtype)[:, :, None, None]
    if addend is not None:
        x = x + addend.to(x.dtype)
    return _bias_act_ref(x, b, dim, spec, alpha, gain, clamp)


def _check_epilogue(x: torch.Tensor, dim: int, scale, addend):
    """``scale`` and ``addend`` checked against ``x``; ``addend`` as ``[N or 1, 1, H, W]``."""
    if x.ndim != 4 or dim != 1:
        raise ValueError(f"bias_act: scale and addend need a 4-D x [N, C, H, W] with dim=1, got x of shape "
                         f"{tuple(x.shape)} and dim={dim}")
    N, C, H, W = x.shape
    if scale is not None and tuple(scale.shape) != (N, C):
        raise ValueError(f"bias_act: scale must be [N, C] = [{N}, {C}], got {tuple(scale.shape)}")
    if addend is not None:
        a = addend.reshape((1,) * (4 - addend.ndim) + tuple(addend.shape)) if addend.ndim < 4 else addend
        if a.ndim != 4 or a.shape[0] not in (1, N) or a.shape[1] != 1 or tuple(a.shape[2:]) != (H, W):
            raise ValueError(f"bias_act: addend must be [{N} or 1, 1, {H}, {W}] or [{H}, {W}], got "
                             f"{tuple(addend.shape)}")
        addend = a
    return scale, addend


def _bias_act_ref(
    x: torch.Tensor,
    b: torch.Tensor | None,
    dim: int,
    spec: ActSpec,
    alpha: float | None,
    gain: float,
    clamp: float,
) -> torch.Tensor:
    if b is not None:
        # Cast so a float32 bias does not silently promote float16 activations.
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
