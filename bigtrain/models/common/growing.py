"""The opt-in for progressive growing (bigtrain/train/schedule.py).

A growable network has a current *stage*: the resolution it makes (G) or takes (D) and the
fade-in ``alpha`` of its newest block. At alpha 0 the newest block is blended out entirely
(G gives the previous resolution's image upsampled), at alpha 1 it alone is used.
``active_parameters()`` lists what the forward uses at the stage, which is all a DDP or
DeepSpeed wrapper may see (an unused parameter is an error under DDP).

Networks that are not growable train at their full resolution; ``active_parameters`` gives
all of their parameters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Growable(nn.Module):
    growable = True

    def __init__(self, img_resolution: int):
        super().__init__()
        self.img_resolution = img_resolution
        self.stage_res, self.alpha = img_resolution, 1.0

    def set_stage(self, resolution: int, alpha: float = 1.0) -> None:
        if resolution not in self.stage_resolutions() or not 0 <= alpha <= 1:
            raise ValueError(f"stage ({resolution}, alpha {alpha}) is not one of this network's: resolutions "
                             f"{self.stage_resolutions()}, alpha in [0, 1]")
        if alpha < 1 and resolution == self.stage_resolutions()[0]:
            raise ValueError(f"the first resolution {resolution} has nothing to fade in from")
        self.stage_res, self.alpha = resolution, float(alpha)

    def stage_resolutions(self) -> list[int]:
        """Resolutions this network can train at, lowest first."""
        raise NotImplementedError

    def active_modules(self) -> list[nn.Module]:
        """Modules the forward runs at the current stage."""
        raise NotImplementedError

    def active_parameters(self) -> list[nn.Parameter]:
        seen, out = set(), []
        for m in self.active_modules():
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out


def active_parameters(net: nn.Module) -> list[nn.Parameter]:
    return net.active_parameters() if getattr(net, "growable", False) else list(net.parameters())


def set_stage(net: nn.Module, resolution: int, alpha: float) -> None:
    if getattr(net, "growable", False):
        net.set_stage(resolution, alpha)


def area_downsample(img: torch.Tensor, resolution: int) -> torch.Tensor:
    """Box-filter ``img`` [N, C, H, W] down to ``resolution`` (an integer factor of H)."""
    factor = img.shape[-1] // resolution
    return img if factor == 1 else F.avg_pool2d(img, factor)


def fade_reals(img: torch.Tensor, alpha: float, upsample) -> torch.Tensor:
    """What D is shown of a real image during a fade-in: the image blended by ``alpha`` with its
    half-resolution version brought back up by G's own ``upsample``, so reals and fakes fade
    alike (at alpha 0 a real looks exactly as a lower-resolution G output can)."""
    if alpha >= 1:
        return img
    return torch.lerp(upsample(area_downsample(img, img.shape[-1] // 2)), img, alpha)
