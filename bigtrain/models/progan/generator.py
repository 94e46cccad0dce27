"""ProGAN generator (Karras, Aila, Laine, Lehtinen 2018, "Progressive Growing of GANs for Improved
Quality, Stability, and Variation").

z (pixel-normalized; a class embedding joins it when conditional) -> a dense layer to 4x4, then per
resolution nearest 2x upsampling and two 3x3 convs, each followed by leaky ReLU and pixelwise feature
normalization; a 1x1 toRGB at every resolution. Equalized learning rate everywhere
(bigtrain/models/common/layers.py).

It grows (bigtrain/models/common/growing.py): at stage (R, alpha) G runs its blocks up to R and
blends toRGB(R) with the nearest-upsampled toRGB(R/2) by alpha.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from bigtrain.config import require
from bigtrain.models.base import Generator
from bigtrain.models.common.growing import Growable
from bigtrain.models.common.layers import (EqualConv2d, EqualLinear, channels_at, check_channel_base,
                                           normalize_2nd_moment, upsample_nearest)


def check_channels(cfg) -> None:
    for k in ("channel_base", "channel_max"):
        require(getattr(cfg, k) >= 1, k, getattr(cfg, k), "must be >= 1")


class GeneratorBlock(nn.Module):
    """One resolution: (the 4x4 dense input | nearest 2x upsampling) then conv 3x3, each layer
    followed by leaky ReLU and pixel norm."""

    def __init__(self, in_dim: int, out_channels: int, resolution: int, pixel_norm: bool):
        super().__init__()
        self.resolution, self.pixel_norm = resolution, pixel_norm
        if resolution == 4:
            # Dense z -> 4x4 features (pixel norm follows, so its gain does not matter).
            self.dense = EqualLinear(in_dim, out_channels * 16, activation="lrelu")
            self.conv0 = None
        else:
            self.dense = None
            self.conv0 = EqualConv2d(in_dim, out_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(out_channels, out_channels, 3, activation="lrelu")

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return normalize_2nd_moment(x, dim=1) if self.pixel_norm else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            x = self.dense(x).view(x.shape[0], -1, 4, 4)
        else:
            x = self.conv0(upsample_nearest(x))
        x = self._norm(x)
        return self._norm(self.conv1(x))


class ProGANGenerator(Growable, Generator):
    @dataclasses.dataclass
    class Config:
        z_dim: int = 512  # Latent z dimensionality.
        channel_base: int = 16384  # Channels at resolution r are min(channel_base / r, channel_max): the paper has 512 up to 32x32, then halving to 16 at 1024.
        channel_max: int = 512  # Cap on channels per layer.
        pixel_norm: bool = True  # Pixelwise feature normalization after every conv (and of z).

        def __post_init__(self):
            require(self.z_dim >= 1, "z_dim", self.z_dim, "must be >= 1")
            check_channels(self)

    def __init__(self, cfg: "ProGANGenerator.Config", img_resolution: int, img_channels: int, c_dim: int = 0):
        super().__init__(img_resolution)
        self.cfg = cfg
        self.z_dim, self.c_dim, self.img_channels = cfg.z_dim, c_dim, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
        check_channel_base("generator", cfg.channel_base, img_resolution)
        ch = lambda r: channels_at(r, cfg.channel_base, cfg.channel_max)  # noqa: E731
        # Conditioning as in the paper's label-conditioned runs: a class embedding joins z.
        self.embed = EqualLinear(c_dim, cfg.z_dim) if c_dim > 0 else None
        in_dim = cfg.z_dim * (2 if c_dim > 0 else 1)
        self.blocks = nn.ModuleDict()
        self.torgb = nn.ModuleDict()
        for res in self.block_resolutions:
            self.blocks[f"b{res}"] = GeneratorBlock(in_dim if res == 4 else ch(res // 2), ch(res), res, cfg.pixel_norm)
            self.torgb[f"b{res}"] = EqualConv2d(ch(res), img_channels, 1)

    truncation_arg = None  # no truncation trick: z is pixel-normalized, so scaling it changes nothing

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, update_emas: bool = False,
                noise_mode: str = "random") -> torch.Tensor:
        """z [N, z_dim], c [N, c_dim] one-hot or None -> images [N, C, R, R] at the current stage."""
        x = normalize_2nd_moment(z.float()) if self.cfg.pixel_norm else z.float()
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.float()))], dim=1)
        prev = None
        for res in self.block_resolutions:
            if res > self.stage_res:
                break
            prev, x = x, self.blocks[f"b{res}"](x)
        img = self.torgb[f"b{self.stage_res}"](x)
        if self.alpha < 1:
            low = self.torgb[f"b{self.stage_res // 2}"](prev)
            img = torch.lerp(upsample_nearest(low), img, self.alpha)
        return img

    def stage_resolutions(self) -> list[int]:
        return list(self.block_resolutions)

    def active_modules(self) -> list[nn.Module]:
        mods = [m for m in (self.embed,) if m is not None]
        mods += [self.blocks[f"b{r}"] for r in self.block_resolutions if r <= self.stage_res]
        mods.append(self.torgb[f"b{self.stage_res}"])
        if self.alpha < 1:
            mods.append(self.torgb[f"b{self.stage_res // 2}"])
        return mods

    def upsample(self, img: torch.Tensor) -> torch.Tensor:
        return upsample_nearest(img)
