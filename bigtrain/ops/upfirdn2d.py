"""Upsample, FIR-filter, downsample (``upfirdn2d``) and its convenience wrappers.

Conventions used by every function in this module (and by ``conv2d_resample``):

* Tensors are NCHW. Per-axis arguments are given x-first: ``up=(ux, uy)``,
  ``padding=(px, py)`` or ``[x0, x1, y0, y1]``; a plain int means both axes.
* Filters are 1-D or 2-D tensors of taps. A 1-D filter is *separable*: it is
  applied along x and then along y, i.e. it acts like ``outer(f, f)``. A 2-D
  filter has shape ``[taps_y, taps_x]`` and may be non-square.
* Per axis, ``upfirdn2d`` computes (``n`` input samples, ``t`` taps):

  1. upsample: insert ``up - 1`` zeros *after* every sample -> ``n * up`` samples;
  2. pad ``p0`` zeros before and ``p1`` after (negative values crop);
  3. "valid" true convolution with the filter -> ``n*up + p0 + p1 - t + 1`` samples;
  4. keep samples ``0, down, 2*down, ...``.

  Output size: ``(n*up + p0 + p1 - t) // down + 1``; equivalently
  ``out[o] = (f * X)(o*down + t - 1 - p0)`` where ``X`` is the zero-inserted,
  zero-extended input and ``*`` the full convolution. ``scipy.signal.upfirdn``
  (which upsamples to ``(n-1)*up + 1`` samples and returns the full
  convolution) is reproduced by ``p0 = t - 1``, ``p1 = t - up``.
"""

from __future__ import annotations

import math
import operator
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from bigtrain.ops._impl import resolve_impl
from bigtrain.ops.conv import conv2d

IntPair = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]


# ----------------------------------------------------------------------------
# Argument parsing shared with conv2d_resample.


def _parse_scaling(v: IntPair, name: str) -> tuple[int, int]:
    """Return ``(vx, vy)`` from an int or an (x, y) pair, each >= 1."""
    try:
        if isinstance(v, (int, np.integer)):
            vx = vy = operator.index(v)
        else:
            vx, vy = (operator.index(e) for e in v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or an (x, y) pair of ints, got {v!r}") from None
    if vx < 1 or vy < 1:
        raise ValueError(f"{name} must be >= 1, got {v!r}")
    return vx, vy


def _parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """Return ``(x0, x1, y0, y1)`` from an int, an (x, y) pair or a 4-list."""
    try:
        if isinstance(padding, (int, np.integer)):
            p = operator.index(padding)
            return p, p, p, p
        vals = [operator.index(e) for e in padding]
    except TypeError:
        raise ValueError(f"padding must be an int, (px, py) or [x0, x1, y0, y1], got {padding!r}") from None
    if len(vals) == 2:
        return vals[0], vals[0], vals[1], vals[1]
    if len(vals) == 4:
        return vals[0], vals[1], vals[2], vals[3]
    raise ValueError(f"padding must be an int, (px, py) or [x0, x1, y0, y1], got {padding!r}")


def _check_filter(f: torch.Tensor | None) -> None:
    if f is None:
        return
    if not isinstance(f, torch.Tensor):
        raise ValueError(f"f must be a torch.Tensor or None (see setup_filter), got {type(f).__name__}")
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"f must be a non-empty 1-D or 2-D tensor, got shape {tuple(f.shape)}")


def _filter_taps(f: torch.Tensor | None) -> tuple[int, int]:
    """Return ``(taps_x, taps_y)``."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


# ----------------------------------------------------------------------------


def setup_filter(
    f,
    device: torch.device = torch.device("cpu"),
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Build a float32 FIR filter tensor for :func:`upfirdn2d` and friends.

    Separable rule: a 1-D input stays 1-D (ops apply it along both axes, so it
    acts as ``outer(f, f)``) unless ``separable=False``, which expands it to
    the 2-D outer product. A 2-D input always stays 2-D.

    Args:
        f: Taps as a list / array / tensor, 1-D (e.g. ``[1, 3, 3, 1]``) or 2-D
            ``[taps_y, taps_x]``. A scalar counts as a single tap; ``None``
            means ``[1]``.
        device: Device of the returned tensor.
        normalize: Scale so that the effective 2-D filter sums to 1 (for a
            1-D filter, the 1-D taps sum to 1).
        flip_filter: Reverse the taps along every axis.
        gain: Scale the effective 2-D filter by this factor. A 1-D filter is
            therefore multiplied by ``sqrt(gain)`` (negative gain needs 2-D).
        separable: ``None`` keeps the dimensionality, ``False`` forces 2-D,
            ``True`` requires a 1-D filter.

    Returns:
        float32 tensor of shape ``[taps]`` or ``[taps_y, taps_x]`` on ``device``.
    """
    if f is None:
        f = [1]
    # Built on the CPU whatever the default device (under torch.device('meta') too), then moved.
    f = torch.as_tensor(f, dtype=torch.float32, device="cpu")
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"setup_filter: f must be non-empty 1-D or 2-D, got shape {tuple(f.shape)}")
    if separable is True and f.ndim != 1:
        raise ValueError(f"setup_filter: separable=True needs a 1-D filter, got shape {tuple(f.shape)}")
    if separable is False and f.ndim == 1:
        f = torch.outer(f, f)
    if normalize:
        total = float(f.sum())
        if total == 0:
            raise ValueError("setup_filter: cannot normalize a filter whose taps sum to 0; pass normalize=False")
        f = f / total
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 1:
        if gain < 0:
            raise ValueError(f"setup_filter: gain={gain} < 0 cannot be split across a separable filter; use separable=False")
        f = f * math.sqrt(gain)
    else:
        f = f * gain
    return f.to(device=device)


# ----------------------------------------------------------------------------


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter (true convolution), downsample.

    See the module docstring for the exact per-axis definition. Output size
    per axis: ``(n*up + p0 + p1 - taps) // down + 1``.

    Args:
        x: Input ``[N, C, H, W]``.
        f: Filter, 1-D (separable) or 2-D ``[taps_y, taps_x]``, or ``None``
            (identity, a single unit tap). Cast to ``x``'s dtype and device.
        up: Upsampling factor, int or ``(ux, uy)``.
        down: Downsampling factor, int or ``(dx, dy)``.
        padding: int, ``(px, py)`` or ``[x0, x1, y0, y1]``, applied on the
            upsampled grid; negative values crop.
        flip_filter: Use correlation instead of convolution (i.e. do not flip
            the taps).
        gain: Overall gain applied once to the effective 2-D filter.
        impl: ``"auto"``, ``"ref"`` or ``"cuda"``.

    Returns:
        ``[N, C, H_out, W_out]`` tensor, same dtype as ``x``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be a 4-D NCHW tensor, got {getattr(x, 'shape', type(x))}")
    _check_filter(f)
    upx, upy = _parse_scaling(up, "up")
    downx, downy = _parse_scaling(down, "down")
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    tx, ty = _filter_taps(f)
    out_w = (x.shape[3] * upx + padx0 + padx1 - tx) // downx + 1
    out_h = (x.shape[2] * upy + pady0 + pady1 - ty) // downy + 1
    if out_w < 1 or out_h < 1:
        raise ValueError(
            f"upfirdn2d: input {tuple(x.shape)} with up={up!r}, down={down!r}, padding={padding!r} and "
            f"filter taps ({tx}, {ty}) gives an empty output ({out_h}x{out_w})"
        )
    if resolve_impl(impl, x, "upfirdn2d") == "cuda":
        from bigtrain.ops._cuda import upfirdn2d_cuda
        return upfirdn2d_cuda(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain)
    return _upfirdn2d_ref(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain)


def is_channels_last(x: torch.Tensor) -> bool:
    """x is laid out NHWC (train.channels_last) and not also NCHW (as a 1-channel or 1x1 tensor is)."""
    return x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    upx: int,
    upy: int,
    downx: int,
    downy: int,
    padx0: int,
    padx1: int,
    pady0: int,
    pady1: int,
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    N, C, H, W = x.shape
    if torch.jit.is_tracing():
        # Export (bigtrain/export): a layer's channels are fixed, only the batch varies; a constant C
        # keeps the depthwise filter's shape known, which ONNX's Conv needs.
        C = int(C)
    if f is None:
        f = torch.ones([1, 1], dtype=x.dtype, device=x.device)
    f = f.to(dtype=x.dtype, device=x.device)

    # Zero insertion as pad-then-reshape: differentiable to any order and no scatter.
    if upx > 1 or upy > 1:
        channels_last = is_channels_last(x)
        x = x.reshape(N, C, H, 1, W, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(N, C, H * upy, W * upx)
        if channels_last:  # the layout it came in (train.channels_last), as the kernel keeps it
            x = x.contiguous(memory_format=torch.channels_last)

    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0) : x.shape[2] - max(-pady1, 0), max(-padx0, 0) : x.shape[3] - max(-padx1, 0)]

    # conv2d is a correlation; flipping the taps turns it into the convolution we define.
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))

    # Depthwise conv; striding inside the conv is the same as keeping every down-th output.
    if f.ndim == 2:
        w = (f * gain)[None, None].expand(C, 1, f.shape[0], f.shape[1])
        return conv2d(x, w, stride=(downy, downx), groups=C)
    # Separable: put the whole gain on one axis so negative gains work too.
    wx = (f * gain)[None, None, None, :].expand(C, 1, 1, f.shape[0])
    wy = f[None, None, :, None].expand(C, 1, f.shape[0], 1)
    x = conv2d(x, wx, stride=(1, downx), groups=C)
    return conv2d(x, wy, stride=(downy, 1), groups=C)


# ----------------------------------------------------------------------------
# Wrappers that pick the padding so the filter is centred and the size is exact.


def _centred_padding(taps: int, up: int, down: int) -> tuple[int, int]:
    """Padding (p0, p1) that centres the filter for a pure up- or downsampling.

    With pixel centres at integer positions, input sample ``i`` sits at
    output position ``i*up + (up-1)/2`` after upsampling; after downsampling,
    output sample ``o`` sits at input position ``o*down + (down-1)/2``. The
    ideal leading pad is ``(taps + up - 2)/2`` resp. ``(taps - down)/2``; for
    odd values we round up. ``p0 + p1`` makes the size exactly ``n*up`` resp.
    ``n // down``.
    """
    assert up == 1 or down == 1
    if up > 1:
        p0 = (taps + up - 1) // 2
        return p0, taps - 1 - p0
    p0 = (taps - down + 1) // 2
    return p0, taps - down - p0


def _wrapper_padding(f, upx, upy, downx, downy, padding) -> list[int]:
    tx, ty = _filter_taps(f)
    px0, px1 = _centred_padding(tx, upx, downx)
    py0, py1 = _centred_padding(ty, upy, downy)
    ux0, ux1, uy0, uy1 = _parse_padding(padding)
    return [px0 + ux0, px1 + ux1, py0 + uy0, py1 + uy1]


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """FIR-filter an image keeping its size, with the filter centred.

    Odd filters are exactly centred; even filters shift by half a pixel
    towards the origin (leading pad ``taps // 2``).

    Args:
        x: Input ``[N, C, H, W]``.
        f: Filter as for :func:`upfirdn2d`.
        padding: Extra padding added to the centring padding (int, (px, py) or
            [x0, x1, y0, y1]); output grows by it.
        flip_filter: Correlation instead of convolution.
        gain: Overall gain.
        impl: ``"auto"``, ``"ref"`` or ``"cuda"``.

    Returns:
        ``[N, C, H + py0 + py1, W + px0 + px1]`` tensor.
    """
    _check_filter(f)
    pad = _wrapper_padding(f, 1, 1, 1, 1, padding)
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample by ``up`` with a centred FIR interpolation filter.

    The filter gain is multiplied by ``ux * uy`` to make up for the inserted
    zeros, so with a normalised filter a constant image stays constant.

    Args:
        x: Input ``[N, C, H, W]``.
        f: Filter as for :func:`upfirdn2d` (e.g. ``setup_filter([1, 3, 3, 1])``).
        up: int or ``(ux, uy)``.
        padding: Extra padding on the upsampled grid, added to the centring padding.
        flip_filter: Correlation instead of convolution.
        gain: Gain on top of the ``ux * uy`` compensation.
        impl: ``"auto"``, ``"ref"`` or ``"cuda"``.

    Returns:
        ``[N, C, H*uy + py0 + py1, W*ux + px0 + px1]`` tensor.
    """
    _check_filter(f)
    upx, upy = _parse_scaling(up, "up")
    pad = _wrapper_padding(f, upx, upy, 1, 1, padding)
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: IntPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Low-pass with a centred FIR filter and keep every ``down``-th sample.

    Args:
        x: Input ``[N, C, H, W]``.
        f: Filter as for :func:`upfirdn2d`.
        down: int or ``(dx, dy)``.
        padding: Extra padding on the input grid, added to the centring padding.
        flip_filter: Correlation instead of convolution.
        gain: Overall gain.
        impl: ``"auto"``, ``"ref"`` or ``"cuda"``.

    Returns:
        ``[N, C, H // dy, W // dx]`` tensor (without extra padding).
    """
    _check_filter(f)
    downx, downy = _parse_scaling(down, "down")
    pad = _wrapper_padding(f, 1, 1, downx, downy, padding)
    return upfirdn2d(x, f, down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)
