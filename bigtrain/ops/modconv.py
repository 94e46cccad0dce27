"""Modulated (style-conditioned) convolution with optional weight demodulation."""

from __future__ import annotations

import torch

from bigtrain.ops._impl import check_impl, resolve_impl
from bigtrain.ops.bias_act import bias_act
from bigtrain.ops.conv2d_resample import _conv2d_resample_ref, conv2d_resample
from bigtrain.ops.upfirdn2d import IntPair, Padding

_DEMOD_EPS = 1e-8

EPILOGUES = ("fused", "separate")
_epilogue = "fused"


def set_epilogue(mode: str) -> None:
    """How :func:`modulated_conv2d` applies an epilogue (``act``) on its activation-scaling path:
    ``"fused"`` (the default) hands the demodulation and the noise to ``bias_act`` (one kernel pass,
    the result in the convolution's dtype); ``"separate"`` multiplies and adds with torch ops before
    ``bias_act``, as before session 20 (three passes; a 16-bit convolution output is promoted to the
    coefficients' float32). The trainer's ``train.modconv_epilogue``; for the benchmark's comparison."""
    global _epilogue
    if mode not in EPILOGUES:
        raise ValueError(f"modconv epilogue: unknown mode {mode!r}; expected one of {', '.join(map(repr, EPILOGUES))}")
    _epilogue = mode


def _check_modconv_args(x, weight, styles) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"modulated_conv2d: x must be [N, I, H, W], got {getattr(x, 'shape', type(x))}")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise ValueError(f"modulated_conv2d: weight must be [O, I, kh, kw], got {getattr(weight, 'shape', type(weight))}")
    N, I = x.shape[0], x.shape[1]
    if weight.shape[1] != I:
        raise ValueError(f"modulated_conv2d: weight {tuple(weight.shape)} does not match x {tuple(x.shape)} in I")
    if not isinstance(styles, torch.Tensor) or tuple(styles.shape) != (N, I):
        raise ValueError(
            f"modulated_conv2d: styles must be [N, I] = [{N}, {I}], got {tuple(getattr(styles, 'shape', ()))}"
        )


def _demod_coefs(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """``rsqrt(sum_{i,ky,kx} (weight[o,i] * styles[n,i])^2 + eps)`` as ``[N, O]``.

    Factored as ``styles^2 @ sum_k(weight^2)^T`` so the [N, O, I, k, k] tensor
    is never needed; both modconv paths share this so they agree bit-for-bit
    in the demodulation.
    """
    wsq = weight.square().sum(dim=[2, 3])  # [O, I]
    return (styles.square() @ wsq.t() + _DEMOD_EPS).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
    impl: str = "auto",
    *,
    bias: torch.Tensor | None = None,
    act: str | None = None,
    act_gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """StyleGAN2-style modulated convolution, optionally with its layer's bias and activation.

    Per sample ``n``: ``w' = weight * styles[n]`` (scales input channels);
    with ``demodulate``, ``w'' = w' * rsqrt(sum_{i,ky,kx} w'^2 + 1e-8)`` per
    output channel; then ``conv2d_resample(x[n], w'', resample_filter, up,
    down, padding, flip_weight)``; then ``+ noise``.

    ``fused_modconv=True`` builds the per-sample weights and runs one grouped
    conv (groups=N). ``fused_modconv=False`` scales the activations by the
    styles, runs the shared-weight conv and scales the output by the
    demodulation coefficients; it is usually faster for large batches and
    the two agree to rounding.

    float16 guard: when ``demodulate`` and ``x`` is float16, ``weight`` is
    first divided by its per-output-channel max-abs times ``sqrt(I*kh*kw)``
    and ``styles`` by their per-sample max-abs. Demodulation is invariant to
    such positive per-(n, o) rescaling, so the result is unchanged (up to the
    1e-8 epsilon), but the intermediate ``x * styles`` and conv outputs of the
    non-fused path, and the squared sums, stay within float16 range.

    Args:
        x: Input ``[N, I, H, W]``.
        weight: Shared weight ``[O, I, kh, kw]``.
        styles: Per-sample input-channel scales ``[N, I]``.
        noise: Optional tensor added to the output, broadcastable to
            ``[N, O, H_out, W_out]`` (typically ``[N, 1, H_out, W_out]``).
        up: Upsampling factor for :func:`conv2d_resample`.
        down: Downsampling factor for :func:`conv2d_resample`.
        padding: Padding for :func:`conv2d_resample` (``k // 2`` keeps the size).
        resample_filter: FIR filter for up/downsampling (``setup_filter``).
        demodulate: Normalise each output channel's per-sample weight.
        flip_weight: As in :func:`conv2d_resample`.
        fused_modconv: Choose the grouped-conv path (see above).
        impl: ``"auto"``, ``"ref"`` or ``"cuda"``: the CUDA kernel builds the fused path's
            per-sample weights (modulation and demodulation in one pass); the convolution
            itself is cuDNN's either way. With ``act``, it also chooses :func:`bias_act`'s.
        bias, act, act_gain, clamp: With ``act`` (a key of ``bias_act``'s ACTIVATIONS), the
            result is ``bias_act(out, bias, act=act, gain=act_gain, clamp=clamp)``, the layer's
            whole epilogue. The demodulation of the non-fused path and the noise then go to
            ``bias_act`` as its ``scale`` and ``addend``: with the kernel, one pass over the
            output instead of three (multiply, add, bias_act). ``noise`` must then be
            ``[N, 1, H_out, W_out]`` or ``[H_out, W_out]``. The result keeps the convolution's dtype
            (under autocast, the 16-bit one), where the separate ops promoted a 16-bit output to
            the float32 of the coefficients.

    Returns:
        ``[N, O, H_out, W_out]`` tensor in ``x``'s dtype.
    """
    _check_modconv_args(x, weight, styles)
    if act is None and (bias is not None or act_gain is not None or clamp is not None):
        raise ValueError("modulated_conv2d: bias, act_gain and clamp belong to the epilogue, which act turns on; "
                         "give act (e.g. act='linear')")
    N, I, H, W = x.shape
    O, _, kh, kw = weight.shape
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)

    if demodulate and x.dtype == torch.float16:
        # Done in float32 so that the scale factors themselves cannot overflow or hit 0/0.
        w32, s32 = weight.float(), styles.float()
        w_scale = w32.abs().amax(dim=[1, 2, 3], keepdim=True).clamp_min(1e-30) * (I * kh * kw) ** 0.5
        s_scale = s32.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
        weight = (w32 / w_scale).to(x.dtype)
        styles = (s32 / s_scale).to(x.dtype)

    # The kernel builds the grouped path's weights; the activation-scaling path has none of its own (and
    # must not need this kernel built: its epilogue is bias_act's).
    check_impl(impl, "modulated_conv2d")
    use_kernel = fused_modconv and resolve_impl(impl, x, "modulated_conv2d") == "cuda"
    dcoefs: torch.Tensor | None = None
    if demodulate and not use_kernel:
        # Squared sums in float32 at least; float16 sums of I*k*k terms lose too much.
        acc = torch.promote_types(x.dtype, torch.float32)
        dcoefs = _demod_coefs(weight.to(acc), styles.to(acc)).to(x.dtype)  # [N, O]

    if not fused_modconv:
        x = x * styles[:, :, None, None]
        x = conv2d_resample(x, weight, f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
        if act is not None and _epilogue == "fused":
            return bias_act(x, bias, act=act, gain=act_gain, clamp=clamp, impl=impl, scale=dcoefs, addend=noise)
        if dcoefs is not None:
            x = x * dcoefs[:, :, None, None]
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x if act is None else bias_act(x, bias, act=act, gain=act_gain, clamp=clamp, impl=impl)

    if use_kernel:
        from bigtrain.ops._cuda import modulate_weight_cuda
        w = modulate_weight_cuda(weight, styles, demodulate, _DEMOD_EPS)  # [N, O, I, kh, kw]
    else:
        w = weight[None] * styles[:, None, :, None, None]  # [N, O, I, kh, kw]
        if dcoefs is not None:
            w = w * dcoefs[:, :, None, None, None]
    x = x.reshape(1, N * I, H, W)
    w = w.reshape(N * O, I, kh, kw)
    x = conv2d_resample(x, w, f=resample_filter, up=up, down=down, padding=padding, groups=N, flip_weight=flip_weight)
    x = x.reshape(N, O, x.shape[2], x.shape[3])
    if act is not None:
        return bias_act(x, bias, act=act, gain=act_gain, clamp=clamp, impl=impl, addend=noise)
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def _modulated_conv2d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
) -> torch.Tensor:
    # The literal definition, one sample at a time, on the naive conv path;
    # no float16 guard (use it in float32/float64 for checking).
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n][None, :, None, None]
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3], keepdim=True) + _DEMOD_EPS).rsqrt()
        outs.append(
            _conv2d_resample_ref(
                x[n : n + 1], w, f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight
            )
        )
    out = torch.cat(outs, dim=0)
    if noise is not None:
        out = out + noise
    return out
