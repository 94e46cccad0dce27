"""StyleGAN2 residual discriminator with minibatch-stddev and an optional projection head
for class conditioning (the conditioning form of StyleGAN2-ADA)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from bigtrain.config import require
from bigtrain.models.base import Discriminator
from bigtrain.models.common.growing import Growable
from bigtrain.models.common.layers import (EqualConv2d, EqualLinear, MinibatchStd, block_precision, channels_at,
                                           check_channel_base)
from bigtrain.ops import downsample2d
from bigtrain.models.stylegan2.generator import MappingNetwork


class DiscriminatorBlock(nn.Module):
    """Residual block: conv -> conv(down 2), plus a 1x1 downsampled skip, each scaled by
    sqrt(0.5) so the sum keeps unit variance."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None, resolution: int = 0,
                 fromrgb: bool = False):
        """in_channels 0: the first block, which reads the image; fromrgb: give a later block its
        own image input too (progressive growing enters D at any block)."""
        super().__init__()
        self.resolution = resolution
        self.amp_dtype: torch.dtype | None = None  # set by set_reduced_precision (StyleGAN2's scheme)
        self.fromrgb = (EqualConv2d(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
                        if in_channels == 0 or fromrgb else None)
        self.conv0 = EqualConv2d(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = EqualConv2d(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = EqualConv2d(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        """x None: read the image through this block's fromRGB."""
        ctx, x = block_precision(self, x, img.device.type)
        with ctx:
            if x is None:
                x = self.fromrgb(img)
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            return y + x


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, mbstd_group_size: int,
                 mbstd_num_channels: int, conv_clamp: float | None = None):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = EqualConv2d(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = EqualLinear(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = EqualLinear(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        x = x.float()  # the epilogue runs in fp32 unless a global autocast says otherwise
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            # Projection: the logit is the inner product with the class's embedding.
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x


class StyleGAN2Discriminator(Growable, Discriminator):
    @dataclasses.dataclass
    class Config:
        channel_base: int = 32768  # Channels at resolution r are min(channel_base / r, channel_max).
        channel_max: int = 512  # Cap on channels per layer.
        mbstd_group_size: int = 4  # Group size of the minibatch-stddev layer (largest divisor of the batch up to this).
        mbstd_num_channels: int = 1  # Features from minibatch-stddev; 0 = off.
        cmap_dim: int | None = None  # Projection dimension for class conditioning; null = channels at 4x4.
        mapping_layers: int = 2  # Class conditioning: depth of the label-embedding network (NVlabs' networks: 8).
        mapping_lr_mul: float = 1.0  # Class conditioning: learning-rate multiplier of that network (NVlabs' networks: 0.01).
        conv_clamp: float | None = None  # Clamp conv outputs to +-this (for reduced precision); null = off.
        resample_filter: list[int] = dataclasses.field(default_factory=lambda: [1, 3, 3, 1])  # FIR taps for downsampling.

        def __post_init__(self):
            for k in ("channel_base", "channel_max", "mbstd_group_size"):
                require(getattr(self, k) >= 1, k, getattr(self, k), "must be >= 1")
            require(self.mbstd_num_channels >= 0, "mbstd_num_channels", self.mbstd_num_channels, "must be >= 0")
            require(self.mapping_layers >= 1, "mapping_layers", self.mapping_layers, "must be >= 1")
            require(self.mapping_lr_mul > 0, "mapping_lr_mul", self.mapping_lr_mul, "must be > 0")

    def __init__(self, cfg: "StyleGAN2Discriminator.Config", img_resolution: int, img_channels: int, c_dim: int = 0,
                 growing: bool = False):
        """growing: every block gets a fromRGB so training can start at a lower resolution."""
        super().__init__(img_resolution)
        self.growable = growing
        self.cfg, self.c_dim = cfg, c_dim
        self.img_channels = img_channels
        log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        check_channel_base("discriminator", cfg.channel_base, img_resolution)
        ch = lambda r: channels_at(r, cfg.channel_base, cfg.channel_max)  # noqa: E731
        cmap_dim = 0 if c_dim == 0 else (cfg.cmap_dim or ch(4))
        self.blocks = nn.ModuleDict()
        for res in self.block_resolutions:
            in_ch = ch(res) if res < img_resolution else 0
            self.blocks[f"b{res}"] = DiscriminatorBlock(in_ch, ch(res), ch(res // 2), img_channels,
                                                        cfg.resample_filter, cfg.conv_clamp, resolution=res,
                                                        fromrgb=growing)
        self.mapping = (MappingNetwork(0, c_dim, cmap_dim, num_ws=None, num_layers=cfg.mapping_layers,
                                       lr_multiplier=cfg.mapping_lr_mul,
                                       w_avg_beta=None) if c_dim > 0 else None)
        self.b4 = DiscriminatorEpilogue(ch(4), cmap_dim, 4, cfg.mbstd_group_size, cfg.mbstd_num_channels,
                                        cfg.conv_clamp)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """img [N, C, H, W] in [-1, 1], c [N, c_dim] -> logits [N, 1]."""
        x = None
        for res in self.block_resolutions:
            if res > self.stage_res:
                continue
            block = self.blocks[f"b{res}"]
            if x is not None and res == self.stage_res // 2 and self.alpha < 1:
                # Fade-in: blend with the image downsampled into the previous entry block.
                low = downsample2d(img, block.conv1.resample_filter)
                x = torch.lerp(block.fromrgb(low).to(x.dtype), x, self.alpha)
            x = block(x, img)
        cmap = self.mapping(None, c) if self.mapping is not None else None
        return self.b4(x, cmap)

    def resolution_blocks(self) -> list[tuple[int, nn.Module]]:
        """(resolution, block), highest resolution first, not counting the 4x4 output layers
        (what FreezeD, ``train.freeze_d``, freezes from the top)."""
        return [(res, self.blocks[f"b{res}"]) for res in self.block_resolutions]

    # ---------------------------------------------------------------- progressive growing
    def stage_resolutions(self) -> list[int]:
        # From 8 up: the 4x4 epilogue has no image input of its own.
        return sorted(self.block_resolutions) if self.growable else [self.img_resolution]

    def active_modules(self) -> list[nn.Module]:
        mods = [m for m in (self.b4, self.mapping) if m is not None]
        for res in self.block_resolutions:
            if res <= self.stage_res:
                block = self.blocks[f"b{res}"]
                if res != self.stage_res:
                    mods += [block.conv0, block.conv1, block.skip]  # entered from the block above
                    if res == self.stage_res // 2 and self.alpha < 1:
                        mods.append(block.fromrgb)
                else:
                    mods.append(block)
        return mods
