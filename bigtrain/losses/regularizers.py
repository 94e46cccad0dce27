"""Gradient regularizers. Each builds its graph with create_graph=True so the caller's
backward differentiates through the gradient (second-order)."""
from __future__ import annotations

import math
from typing import Callable

import torch


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def r1_penalty(real_img: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """||d D(x) / d x||^2 per sample [N] (Mescheder et al. 2018). ``real_img`` must require grad
    and ``real_logits`` be computed from it."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True, only_inputs=True)
    return _at_least_fp32(grad).square().sum(dim=[1, 2, 3])  # sums in fp32 under bf16/fp16 autocast


def gradient_penalty(D: Callable, real_img: torch.Tensor, fake_img: torch.Tensor, c, target: float = 1.0) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): (||grad D(x_hat)|| - target)^2 per sample on random
    interpolates x_hat between real and fake."""
    eps = torch.rand(real_img.shape[0], 1, 1, 1, device=real_img.device, dtype=real_img.dtype)
    # Interpolates in the reals' dtype: fakes come out of G in bf16/fp16 under autocast.
    x_hat = (real_img.detach().lerp(fake_img.detach().to(real_img.dtype), eps)).requires_grad_(True)
    logits = D(x_hat, c)
    (grad,) = torch.autograd.grad(logits.sum(), x_hat, create_graph=True, only_inputs=True)
    return (grad.flatten(1).norm(dim=1) - target).square()


def path_lengths(img: torch.Tensor, ws: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Path length |J_w^T y| per sample [N] for random image-space y ~ N(0, 1/(H W))
    (Karras et al. 2020); ``img`` must be computed from ``ws``. ``noise`` (standard normal,
    shaped like img) can be given to make the draw reproducible per sample."""
    if noise is None:
        noise = torch.randn_like(img)
    noise = noise / math.sqrt(img.shape[2] * img.shape[3])
    (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True, only_inputs=True)
    return _at_least_fp32(grad).square().sum(dim=2).mean(dim=1).sqrt()


def orthogonal_penalty(weights) -> torch.Tensor:
    """BigGAN's orthogonal regularization (Brock et al. 2019, eq. 3) without the weight:
    sum over matrices W (rows = output units, conv kernels flattened) of
    ||W W^T * (1 - I)||_F^2, which pushes filters towards orthogonality without fixing their norms."""
    total = None
    for p in weights:
        w = p.flatten(1).float()
        gram = w @ w.t()
        off = gram - torch.diag_embed(torch.diagonal(gram))
        term = off.square().sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros([])
