"""ProGAN discriminator: the generator mirrored (generator.py). A 1x1 fromRGB at every resolution,
two 3x3 convs and 2x average pooling per block, and a 4x4 epilogue with minibatch standard
deviation, a conv, two dense layers and (conditional) a projection head. Equalized learning rate.

It grows: at stage (R, alpha) D enters at R and blends with fromRGB(R/2) of the 2x average-pooled
image by alpha.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.config import require
from bigtrain.models.base import Discriminator
from bigtrain.models.common.growing import Growable
from bigtrain.models.common.layers import EqualConv2d, EqualLinear, MinibatchStd, channels_at, check_channel_base

from .generator import check_channels


class DiscriminatorBlock(nn.Module):
    """conv 3x3 -> conv 3x3 -> 2x average pooling, leaky ReLU after each conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(self.conv0(x)), 2)


class ProGANDiscriminator(Growable, Discriminator):
    @dataclasses.dataclass
    class Config:
        channel_base: int = 16384  # Channels at resolution r are min(channel_base / r, channel_max).
        channel_max: int = 512  # Cap on channels per layer.
        mbstd_group_size: int = 4  # Group size of the minibatch-stddev layer (largest divisor of the batch up to this).
        mbstd_num_channels: int = 1  # Features from minibatch-stddev; 0 = off.

        def __post_init__(self):
            check_channels(self)
            require(self.mbstd_group_size >= 1, "mbstd_group_size", self.mbstd_group_size, "must be >= 1")
            require(self.mbstd_num_channels >= 0, "mbstd_num_channels", self.mbstd_num_channels, "must be >= 0")

    def __init__(self, cfg: "ProGANDiscriminator.Config", img_resolution: int, img_channels: int, c_dim: int = 0,
                 growing: bool = True):
        """growing is accepted for the family interface; ProGAN's D can always grow."""
        super().__init__(img_resolution)
        self.cfg, self.c_dim = cfg, c_dim
        self.block_resolutions = [2 ** i for i in range(int(np.log2(img_resolution)), 2, -1)]
        check_channel_base("discriminator", cfg.channel_base, img_resolution)
        ch = lambda r: channels_at(r, cfg.channel_base, cfg.channel_max)  # noqa: E731
        self.fromrgb = nn.ModuleDict({f"b{r}": EqualConv2d(img_channels, ch(r), 1, activation="lrelu")
                                      for r in self.block_resolutions + [4]})
        self.blocks = nn.ModuleDict({f"b{r}": DiscriminatorBlock(ch(r), ch(r // 2)) for r in self.block_resolutions})
        c4 = ch(4)
        self.mbstd = MinibatchStd(cfg.mbstd_group_size, cfg.mbstd_num_channels) if cfg.mbstd_num_channels else None
        self.conv = EqualConv2d(c4 + cfg.mbstd_num_channels, c4, 3, activation="lrelu")
        self.fc = EqualLinear(c4 * 16, c4, activation="lrelu")
        # Projection head (Miyato & Koyama 2018) for class conditioning: logit + <embed(c), features>.
        self.out = EqualLinear(c4, 1)
        self.embed = EqualLinear(c_dim, c4) if c_dim > 0 else None

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """img [N, C, R, R] at the current stage, c [N, c_dim] -> logits [N, 1]."""
        R = self.stage_res
        x = self.fromrgb[f"b{R}"](img.float())
        for res in [r for r in self.block_resolutions if r <= R]:
            x = self.blocks[f"b{res}"](x)
            if res == R and self.alpha < 1:
                low = self.fromrgb[f"b{R // 2}"](F.avg_pool2d(img.float(), 2))
                x = torch.lerp(low, x, self.alpha)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.fc(self.conv(x).flatten(1))
        out = self.out(x)
        if self.embed is not None:
            out = out + (self.embed(c.float()) * x).sum(dim=1, keepdim=True) / math.sqrt(x.shape[1])
        return out

    def stage_resolutions(self) -> list[int]:
        return sorted(self.block_resolutions + [4])

    def active_modules(self) -> list[nn.Module]:
        R = self.stage_res
        mods = [self.fromrgb[f"b{R}"], self.conv, self.fc, self.out]
        mods += [m for m in (self.embed,) if m is not None]
        mods += [self.blocks[f"b{r}"] for r in self.block_resolutions if r <= R]
        if self.alpha < 1:
            mods.append(self.fromrgb[f"b{R // 2}"])
        return mods
