"""Adversarial loss formulas on discriminator logits. Each returns per-sample losses [N];
callers average. ``real``/``fake`` are D's logits [N, 1] on real and generated images."""
from __future__ import annotations

import torch
import torch.nn.functional as F

ADVERSARIAL_TYPES = ("logistic", "hinge", "wgan", "lsgan", "ragan")


def g_loss(kind: str, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    """Generator loss. ``real`` is needed only by the relativistic ('ragan') loss."""
    if kind == "logistic":  # non-saturating: -log sigmoid(D(G(z)))
        return F.softplus(-fake).flatten()
    if kind in ("hinge", "wgan"):  # -D(G(z))
        return (-fake).flatten()
    if kind == "lsgan":  # 0.5 (D(G(z)) - 1)^2
        return (0.5 * (fake - 1).square()).flatten()
    if kind == "ragan":  # relativistic average, logistic form
        return (F.softplus(-(fake - real.mean())) + F.softplus(real - fake.mean())).flatten()
    raise ValueError(f"unknown adversarial loss {kind!r}; choose one of {ADVERSARIAL_TYPES}")


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss (real and fake parts summed per sample)."""
    if kind == "logistic":  # -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))
        return (F.softplus(-real) + F.softplus(fake)).flatten()
    if kind == "hinge":
        return (F.relu(1 - real) + F.relu(1 + fake)).flatten()
    if kind == "wgan":
        return (fake - real).flatten()
    if kind == "lsgan":
        return (0.5 * (real - 1).square() + 0.5 * fake.square()).flatten()
    if kind == "ragan":
        return (F.softplus(-(real - fake.mean())) + F.softplus(fake - real.mean())).flatten()
    raise ValueError(f"unknown adversarial loss {kind!r}; choose one of {ADVERSARIAL_TYPES}")
