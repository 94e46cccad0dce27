"""Differentiable augmentation of every image D sees, real and generated alike (Zhao et al. 2020,
"Differentiable Augmentation for Data-Efficient GAN Training"). Reals and fakes get independent draws
from the same distribution of transforms, and gradients flow through them to G, so D cannot win on
details the transforms destroy and G is not pushed to reproduce the augmentations. Draws come from
the torch RNG (checkpointed), so resume stays exact."""
from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("translation", "cutout", "brightness", "contrast")


def diff_augment(x_NCHW: torch.Tensor, policy: list[str] | tuple[str, ...],
                 translation_ratio: float = 0.125, cutout_ratio: float = 0.5) -> torch.Tensor:
    """Apply each named augmentation with per-sample random parameters.

    Args:
        x_NCHW: images in about [-1, 1].
        policy: names from AUGMENTATIONS, applied in the given order.
        translation_ratio: max shift as a fraction of the image size (integer pixels, zero fill).
        cutout_ratio: side of the zeroed square as a fraction of the image size.
    Returns:
        Augmented images, same shape; differentiable w.r.t. x_NCHW.
    """
    for name in policy:
        if name == "translation":
            x_NCHW = _translate(x_NCHW, translation_ratio)
        elif name == "cutout":
            x_NCHW = _cutout(x_NCHW, cutout_ratio)
        elif name == "brightness":
            x_NCHW = x_NCHW + (torch.rand(x_NCHW.shape[0], 1, 1, 1, device=x_NCHW.device) - 0.5)
        elif name == "contrast":
            mean = x_NCHW.mean(dim=[1, 2, 3], keepdim=True)
            x_NCHW = (x_NCHW - mean) * (torch.rand(x_NCHW.shape[0], 1, 1, 1, device=x_NCHW.device) + 0.5) + mean
        else:
            raise ValueError(f"unknown augmentation {name!r}; choose from {AUGMENTATIONS}")
    return x_NCHW


def _translate(x: torch.Tensor, ratio: float) -> torch.Tensor:
    N, C, H, W = x.shape
    sy, sx = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (N, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (N, 1, 1), device=x.device)
    # Gather from the zero-padded image: output (i, j) reads input (i - dy, j - dx).
    iy = torch.arange(H, device=x.device).view(1, H, 1) - dy + sy
    ix = torch.arange(W, device=x.device).view(1, 1, W) - dx + sx
    padded = F.pad(x, [sx, sx, sy, sy])
    n = torch.arange(N, device=x.device).view(N, 1, 1)
    return padded.permute(0, 2, 3, 1)[n, iy, ix].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero a square of side ratio * size per sample, centred anywhere (clipped at the edges)."""
    N, C, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    y0 = torch.randint(0, H, (N, 1, 1), device=x.device) - ch // 2
    x0 = torch.randint(0, W, (N, 1, 1), device=x.device) - cw // 2
    yy = torch.arange(H, device=x.device).view(1, H, 1)
    xx = torch.arange(W, device=x.device).view(1, 1, W)
    inside = (yy >= y0) & (yy < y0 + ch) & (xx >= x0) & (xx < x0 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)
