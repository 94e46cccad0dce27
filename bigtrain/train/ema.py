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
def update_ema(ema: nn.Module, net: nn.Module, beta: float) -> None:
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.copy_(p.detach().to(p_ema.dtype).lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)
