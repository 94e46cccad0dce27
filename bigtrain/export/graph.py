"""ONNX and TorchScript exports: one traced graph from latents to images, built from the
plain-PyTorch reference ops on CPU, checked against the generator it came from.

The graph's inputs are ``z`` [N, z_dim] float32, ``label`` [N] int64 (conditional generators
only) and ``trunc`` [] float32 (families with a truncation trick only); its output ``img`` is
[N, C, R, R] float32 in about [-1, 1] at the full resolution. N is free. ``trunc`` means what
``bigtrain generate --trunc`` means: StyleGAN2's psi (1 = off), BigGAN's threshold (<= 0 = off).
Noise inputs are the generator's constant noise, so an input gives one image.
"""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.models.sampling import class_labels
from bigtrain.models.sampling import latents_from_seeds

ONNX_OPSET = 17


class Sampler(nn.Module):
    """z, label, trunc -> image, with the tensor arithmetic a tracer can follow (the generators'
    own truncation branches on Python floats)."""

    def __init__(self, G: nn.Module, family: str):
        super().__init__()
        self.G, self.family = G, family
        self.c_dim, self.z_dim = G.c_dim, G.z_dim
        self.resolution = G.img_resolution
        self.has_trunc = G.truncation_arg is not None

    def input_names(self) -> list[str]:
        return ["z"] + (["label"] if self.c_dim else []) + (["trunc"] if self.has_trunc else [])

    def forward(self, z: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        rest = list(rest)
        c = F.one_hot(rest.pop(0), self.c_dim).to(z.dtype) if self.c_dim else None
        trunc = rest.pop(0) if self.has_trunc else None
        G = self.G
        if self.family == "stylegan2":
            ws = G.mapping(z, c)
            w_avg = G.mapping.w_avg
            ws = w_avg + trunc * (ws - w_avg)
            img = G.synthesis(ws, noise_mode="const", fused_modconv=False, out_res=G.stage_res, alpha=G.alpha)
        elif self.family == "biggan":
            z = torch.where(trunc > 0, truncate_z_traceable(z, trunc.clamp(min=1e-3)), z)
            img = G(z, c)
        else:
            img = G(z, c, noise_mode="const")
        if img.shape[-1] != self.resolution:  # a generator exported mid-growing: its stage, upsampled
            img = F.interpolate(img, size=self.resolution, mode="nearest")
        return img


# BigGAN's truncation maps z through the normal CDF onto a truncated normal; ONNX has Erf but
# neither Erfc nor an inverse, and float32 1 + erf(x) loses the tails. So: the lower tail only
# (the upper by symmetry), Phi(x) for x <= 0 from an erfc approximation with relative error
# below 1.2e-7 (the Chebyshev fit in Numerical Recipes, 6.2), and the quantile from Acklam's
# rational approximation (relative error 1.2e-9) refined by one Newton step.
_ERFC = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196,
         1.00002368, -1.26551223)
_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
      -3.066479806614716e+01, 2.506628277459239e+00)
_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
      -1.328068155288572e+01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
      4.374664141464968e+00, 2.938163982698783e+00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
_TINY = 1e-37  # above float32's smallest normal: log() of it is finite


def _poly(coefs, x):
    out = torch.full_like(x, coefs[0])
    for c in coefs[1:]:
        out = out * x + c
    return out


def ndtr_lower(x: torch.Tensor) -> torch.Tensor:
    """Phi(x) for x <= 0, accurate relative to its size even far out in the tail."""
    a = -x / math.sqrt(2)
    t = 1 / (1 + 0.5 * a)
    return 0.5 * t * torch.exp(-a * a + _poly(_ERFC, t))


def ndtri_lower(p: torch.Tensor) -> torch.Tensor:
    """The standard normal quantile for p in (0, 0.5], from elementwise ops that ONNX has."""
    p_low = 0.02425
    q = p - 0.5
    r = q * q
    central = q * _poly(_A, r) / (_poly(_B, r) * r + 1)
    t = torch.sqrt(-2 * torch.log(p))
    tail = _poly(_C, t) / (_poly(_D, t) * t + 1)
    x = torch.where(p > p_low, central, tail).clamp(max=0)
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return x - (ndtr_lower(x) - p) / pdf


def truncate_z_traceable(z: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """BigGAN's truncation (bigtrain.models.biggan.generator.truncate_z) with a tensor threshold,
    computed on the lower half and mirrored, clamped to [-threshold, threshold]."""
    lo = ndtr_lower(-threshold)
    p = (lo + (1 - 2 * lo) * ndtr_lower(-z.abs())).clamp(min=_TINY)
    x = -ndtri_lower(p) * torch.sign(z)
    return torch.minimum(torch.maximum(x, -threshold), threshold)


def example_inputs(sampler: Sampler, n: int, trunc: float | None, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs for ``n`` images from seeds seed..seed+n-1 (labels cycle through the classes)."""
    z = latents_from_seeds(list(range(seed, seed + n)), sampler.z_dim)
    args = [z]
    if sampler.c_dim:
        args.append(class_labels(sampler.c_dim, seed, n, None))
    if sampler.has_trunc:
        off = 1.0 if sampler.family == "stylegan2" else 0.0
        args.append(torch.tensor(off if trunc is None else trunc, dtype=torch.float32))
    return tuple(args)


def _quiet_trace():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")  # tracer and deprecation chatter; the checks below are what count
    return ctx


def to_onnx(sampler: Sampler, args: tuple[torch.Tensor, ...]) -> bytes:
    names = sampler.input_names()
    dynamic = {n: {0: "batch"} for n in names if n != "trunc"}
    dynamic["img"] = {0: "batch"}
    f = io.BytesIO()
    ctx = _quiet_trace()
    try:
        torch.onnx.export(sampler, args, f, dynamo=False, input_names=names, output_names=["img"],
                          dynamic_axes=dynamic, opset_version=ONNX_OPSET, do_constant_folding=True)
    finally:
        ctx.__exit__(None, None, None)
    return f.getvalue()


def onnx_session(model: bytes | str, threads: int = 1):
    """An ONNX Runtime CPU session for a graph (bytes or path); 1 thread: the same sums in the
    same order on every run."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run_onnx(model: bytes | str, args: tuple[torch.Tensor, ...], names: list[str]) -> np.ndarray:
    return onnx_session(model).run(["img"], {n: a.numpy() for n, a in zip(names, args)})[0]


def to_torchscript(sampler: Sampler, args: tuple[torch.Tensor, ...]) -> bytes:
    ctx = _quiet_trace()
    try:
        traced = torch.jit.trace(sampler, args, check_trace=False)
        f = io.BytesIO()
        torch.jit.save(traced, f)
    finally:
        ctx.__exit__(None, None, None)
    return f.getvalue()


def run_torchscript(model: bytes, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
    ctx = _quiet_trace()
    try:
        m = torch.jit.load(io.BytesIO(model), map_location="cpu")
    finally:
        ctx.__exit__(None, None, None)
    with torch.no_grad():
        return m(*args)
