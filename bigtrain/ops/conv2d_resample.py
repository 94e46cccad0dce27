"""2-D convolution fused with FIR up- or downsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bigtrain.ops.conv import conv2d, conv_transpose2d
from bigtrain.ops.upfirdn2d import (
    IntPair,
    Padding,
    _centred_padding,
    _check_filter,
    _filter_taps,
    _parse_padding,
    _parse_scaling,
    upfirdn2d,
)


def _resample_padding(f, upx, upy, downx, downy, padding) -> tuple[int, int, int, int]:
    """Total padding ``(x0, x1, y0, y1)`` for the FIR stage: centring + user padding."""
    tx, ty = _filter_taps(f)
    cx0, cx1 = _centred_padding(tx, upx, downx)
    cy0, cy1 = _centred_padding(ty, upy, downy)
    px0, px1, py0, py1 = _parse_padding(padding)
    return cx0 + px0, cx1 + px1, cy0 + py0, cy1 + py1


def _check_conv_args(x, w, groups) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"conv2d_resample: x must be a 4-D NCHW tensor, got {getattr(x, 'shape', type(x))}")
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise ValueError(f"conv2d_resample: w must be a 4-D [O, I/groups, kh, kw] tensor, got {getattr(w, 'shape', type(w))}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d_resample: groups must be a positive int, got {groups!r}")
    if w.shape[0] % groups != 0 or x.shape[1] != w.shape[1] * groups:
        raise ValueError(
            f"conv2d_resample: x {tuple(x.shape)} and w {tuple(w.shape)} do not match groups={groups} "
            "(need x.shape[1] == w.shape[1] * groups and w.shape[0] % groups == 0)"
        )


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Convolution with optional FIR upsampling before it or downsampling around it.

    Definition (what :func:`_conv2d_resample_ref` computes literally); ``c``
    is the centring padding of ``upsample2d`` / ``downsample2d``:

    * ``up > 1``: ``conv2d(upfirdn2d(x, f, up, padding=c + padding, gain=up_x*up_y), w)``
    * ``down > 1``: ``conv2d(upfirdn2d(x, f, padding=c + padding), w, stride=down)``
    * otherwise: ``conv2d`` of ``x`` zero-padded by ``padding``; ``f`` is unused.

    All padding happens on the high-resolution grid *before* the FIR filter,
    so the result is a window of the infinite-domain composition (no zeroed
    filter tails). For an odd ``k x k`` kernel with ``padding = k // 2`` the
    output is exactly ``in * up`` (resp. ``in // down``) per axis; for the
    general size see the definition.

    The implementation avoids the naive cost: ``up`` runs a strided
    ``conv_transpose2d`` on the low-resolution input and filters afterwards
    (no 4x conv work on zeros); ``down`` runs a strided conv; 1x1 kernels are
    applied at low resolution. Up- and downsampling together is not supported.

    Args:
        x: Input ``[N, C, H, W]``.
        w: Weight ``[O, C // groups, kh, kw]``.
        f: FIR filter (1-D separable or 2-D, see ``setup_filter``) or ``None``.
        up: int or ``(ux, uy)``.
        down: int or ``(dx, dy)``.
        padding: int, ``(px, py)`` or ``[x0, x1, y0, y1]`` on the high-res grid.
        groups: Convolution groups.
        flip_weight: ``True``: ``w`` is applied as a correlation, like
            ``torch.nn.functional.conv2d``; ``False``: as a true convolution
            (same as passing ``w.flip([2, 3])``).
        flip_filter: Apply ``f`` as a correlation.

    Returns:
        ``[N, O, H_out, W_out]`` tensor.
    """
    if isinstance(groups, torch.Tensor):
        # Batch-sized groups (fused modconv) arrive as tensors under torch.jit.trace.
        groups = int(groups)
    _check_conv_args(x, w, groups)
    _check_filter(f)
    upx, upy = _parse_scaling(up, "up")
    downx, downy = _parse_scaling(down, "down")
    if (upx > 1 or upy > 1) and (downx > 1 or downy > 1):
        raise ValueError(f"conv2d_resample: up={up!r} and down={down!r} cannot both be > 1")
    kh, kw = int(w.shape[2]), int(w.shape[3])
    tx, ty = _filter_taps(f)
    px0, px1, py0, py1 = _resample_padding(f, upx, upy, downx, downy, padding)
    # Output size of the definition above; checked here so errors name our arguments.
    if upx > 1 or upy > 1:
        out_w = x.shape[3] * upx + px0 + px1 - tx + 1 - kw + 1
        out_h = x.shape[2] * upy + py0 + py1 - ty + 1 - kh + 1
    elif downx > 1 or downy > 1:
        out_w = (x.shape[3] + px0 + px1 - tx + 1 - kw) // downx + 1
        out_h = (x.shape[2] + py0 + py1 - ty + 1 - kh) // downy + 1
    else:
        ux0, ux1, uy0, uy1 = _parse_padding(padding)
        out_w = x.shape[3] + ux0 + ux1 - kw + 1
        out_h = x.shape[2] + uy0 + uy1 - kh + 1
    if out_w < 1 or out_h < 1:
        raise ValueError(
            f"conv2d_resample: x {tuple(x.shape)}, w {tuple(w.shape)}, up={up!r}, down={down!r}, "
            f"padding={padding!r} give an empty output ({out_h}x{out_w})"
        )

    w_corr = w if flip_weight else w.flip([2, 3])
    w_corr = w_corr.to(x.dtype)
    pointwise = kh == 1 and kw == 1

    if upx > 1 or upy > 1:
        if pointwise:
            # A 1x1 conv commutes with every spatial op: mix channels at low resolution.
            x = conv2d(x, w_corr, groups=groups)
            return upfirdn2d(x, f, up=(upx, upy), padding=[px0, px1, py0, py1], gain=upx * upy, flip_filter=flip_filter)
        # conv_transpose2d scatters the kernel as a true convolution, hence the
        # flipped weight; regrouped from [O, I/g, ...] to [I, O/g, ...].
        O, Ig = int(w.shape[0]), int(w.shape[1])
        wt = w_corr.flip([2, 3])
        wt = wt.reshape(groups, O // groups, Ig, kh, kw).transpose(1, 2).reshape(groups * Ig, O // groups, kh, kw)
        x = conv_transpose2d(x, wt, stride=(upy, upx), groups=groups)
        # conv_transpose2d returns the full support of (w * zero-inserted x); this
        # padding picks the window that the definition's "valid" conv produces.
        pad = [px0 - kw + 1, px1 - kw + upx, py0 - kh + 1, py1 - kh + upy]
        return upfirdn2d(x, f, padding=pad, gain=upx * upy, flip_filter=flip_filter)

    if downx > 1 or downy > 1:
        if pointwise:
            x = upfirdn2d(x, f, down=(downx, downy), padding=[px0, px1, py0, py1], flip_filter=flip_filter)
            return conv2d(x, w_corr, groups=groups)
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return conv2d(x, w_corr, stride=(downy, downx), groups=groups)

    ux0, ux1, uy0, uy1 = _parse_padding(padding)
    if ux0 == ux1 == uy0 == uy1 and ux0 >= 0:
        return conv2d(x, w_corr, padding=ux0, groups=groups)
    return conv2d(upfirdn2d(x, None, padding=[ux0, ux1, uy0, uy1]), w_corr, groups=groups)


def _conv2d_resample_ref(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    # The literal (slow) definition: full-resolution conv, then subsample.
    upx, upy = _parse_scaling(up, "up")
    downx, downy = _parse_scaling(down, "down")
    pad = list(_resample_padding(f, upx, upy, downx, downy, padding))
    w = (w if flip_weight else w.flip([2, 3])).to(x.dtype)
    if upx > 1 or upy > 1:
        x = upfirdn2d(x, f, up=(upx, upy), padding=pad, gain=upx * upy, flip_filter=flip_filter, impl="ref")
        return F.conv2d(x, w, groups=groups)
    if downx > 1 or downy > 1:
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, impl="ref")
        return F.conv2d(x, w, groups=groups)[:, :, ::downy, ::downx]
    x = upfirdn2d(x, None, padding=padding, impl="ref")
    return F.conv2d(x, w, groups=groups)
