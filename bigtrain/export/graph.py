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
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.models.sampling import class_labels, latents_from_seeds

ONNX_OPSET = 17


class Sampler(nn.Module):
    """z, label, trunc -> image, through the generator's ``traceable`` (its truncation as tensor
    arithmetic a tracer can follow; the generators' own truncation branches on Python floats)."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = G
        self.c_dim, self.z_dim = G.c_dim, G.z_dim
        self.resolution = G.img_resolution
        self.has_trunc = G.truncation_arg is not None

    def input_names(self) -> list[str]:
        return ["z"] + (["label"] if self.c_dim else []) + (["trunc"] if self.has_trunc else [])

    def forward(self, z: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        rest = list(rest)
        c = F.one_hot(rest.pop(0), self.c_dim).to(z.dtype) if self.c_dim else None
        trunc = rest.pop(0) if self.has_trunc else None
        img = self.G.traceable(z, c, trunc)
        if img.shape[-1] != self.resolution:  # a generator exported mid-growing: its stage, upsampled
            img = F.interpolate(img, size=self.resolution, mode="nearest")
        return img


def example_inputs(sampler: Sampler, n: int, trunc: float | None, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs for ``n`` images from seeds seed..seed+n-1 (labels cycle through the classes)."""
    z = latents_from_seeds(list(range(seed, seed + n)), sampler.z_dim)
    args = [z]
    if sampler.c_dim:
        args.append(class_labels(sampler.c_dim, seed, n, None))
    if sampler.has_trunc:
        off = sampler.G.truncation_off
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
