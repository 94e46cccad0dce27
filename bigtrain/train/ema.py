"""Exponential moving average of generator weights, parameterised by half-life in images."""
from __future__ import annotations

import torch
from torch import nn


def ema_beta(batch_size: int, nimg: int, halflife_kimg: float, rampup: float | None) -> float:
    """Per-step decay so weights halve their influence every ``halflife_kimg`` thousand images;
    early on the half-life is capped at ``nimg * rampup`` so G_ema tracks a fast-moving G."""
    ema_nimg = halflife_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, nimg * rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, beta: float, foreach: bool | None = None) -> None:
    """ema's parameters become lerp(net's, ema's, beta); its buffers, net's.

    ``foreach`` (default: when ema is on a GPU) does it with torch's multi-tensor ops, a few
    launches for the whole network where the loop makes two per parameter (about 250 for
    paper256's G); the same lerp, so the same bits. On the CPU the loop is the faster of the two
    (docs/benchmarks.md)."""
    pairs = list(zip(ema.parameters(), net.parameters()))
    buffers = list(zip(ema.buffers(), net.buffers()))
    if foreach is None:
        foreach = bool(pairs) and all(p_ema.is_cuda for p_ema, _ in pairs)
    if not foreach:
        for p_ema, p in pairs:
            p_ema.copy_(p.detach().to(p_ema.dtype).lerp(p_ema, beta))
        for b_ema, b in buffers:
            b_ema.copy_(b)
        return
    if pairs:
        ema_params = [p_ema for p_ema, _ in pairs]
        mixed = torch._foreach_lerp([p.detach().to(p_ema.dtype) for p_ema, p in pairs], ema_params, beta)
        torch._foreach_copy_(ema_params, mixed)
    if buffers:
        torch._foreach_copy_([b_ema for b_ema, _ in buffers], [b for _, b in buffers])
