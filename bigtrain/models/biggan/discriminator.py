"""BigGAN discriminator (and BigGAN-deep's): residual down-blocks, ReLU, global sum pooling, a
linear logit plus the projection term <embed(c), features>. Spectral normalization on every weight.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.models.base import Discriminator

from .layers import SelfAttention, SNConv2d, SNEmbedding, SNLinear, check_arch, ortho_init


class DBlock(nn.Module):
    """(ReLU) -> conv3x3 -> ReLU -> conv3x3 -> (avg pool), plus a 1x1 conv / pooled skip."""

    def __init__(self, in_ch: int, out_ch: int, down: bool, preactivation: bool):
        super().__init__()
        self.down, self.preact = down, preactivation
        self.conv1 = SNConv2d(in_ch, out_ch, 3)
        self.conv2 = SNConv2d(out_ch, out_ch, 3)
        self.conv_sc = SNConv2d(in_ch, out_ch, 1) if (in_ch != out_ch or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(x) if self.preact else x)
        h = self.conv2(F.relu(h))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.conv_sc is not None:
            if self.preact:  # pool after the conv in inner blocks, before it in the first one
                x = self.conv_sc(x)
                x = F.avg_pool2d(x, 2) if self.down else x
            else:
                x = self.conv_sc(F.avg_pool2d(x, 2) if self.down else x)
        return h + x


class DBlockDeep(nn.Module):
    """Bottleneck: ReLU-1x1 to out/4, two ReLU-3x3, ReLU-1x1 out, (pool); skip pools and adds
    channels with a 1x1 conv when out > in."""

    def __init__(self, in_ch: int, out_ch: int, down: bool):
        super().__init__()
        mid = out_ch // 4
        self.down = down
        self.conv1, self.conv2 = SNConv2d(in_ch, mid, 1), SNConv2d(mid, mid, 3)
        self.conv3, self.conv4 = SNConv2d(mid, mid, 3), SNConv2d(mid, out_ch, 1)
        self.conv_sc = SNConv2d(in_ch, out_ch - in_ch, 1) if out_ch > in_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(x))
        h = self.conv3(F.relu(self.conv2(F.relu(h))))
        h = self.conv4(F.relu(h))
        if self.down:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        if self.conv_sc is not None:
            x = torch.cat([x, self.conv_sc(x)], dim=1)
        return h + x


class BigGANDiscriminator(Discriminator):
    @dataclasses.dataclass
    class Config:
        ch: int = 96  # Channel unit; block i outputs ch x ch_mult[i] channels.
        ch_mult: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 4, 8, 16, 16])  # Output channel multipliers, one per block: blocks halve the resolution down to 4x4, the last keeps it.
        attn_res: list[int] = dataclasses.field(default_factory=lambda: [64])  # Resolutions with self-attention after their block.
        deep: bool = False  # BigGAN-deep: bottleneck blocks, two per resolution.

        def __post_init__(self):
            check_arch(self)

    def __init__(self, cfg: "BigGANDiscriminator.Config", img_resolution: int, img_channels: int, c_dim: int = 0):
        super().__init__()
        self.cfg, self.c_dim = cfg, c_dim
        n_down = int(np.log2(img_resolution)) - 2
        if len(cfg.ch_mult) != n_down + 1:
            raise ValueError(f"discriminator.ch_mult needs {n_down + 1} entries for {img_resolution}x{img_resolution} "
                             f"({n_down} downsampling blocks to 4x4 and one more), got {cfg.ch_mult}")
        chans = [cfg.ch * m for m in cfg.ch_mult]
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        self.block_attn: list[str | None] = []
        res = img_resolution
        if cfg.deep:
            self.input_conv = SNConv2d(img_channels, chans[0], 3)
            in_ch = chans[0]
        else:
            self.input_conv, in_ch = None, img_channels
        for i, out_ch in enumerate(chans):
            down = i < n_down
            if cfg.deep:
                self.blocks.append(nn.Sequential(DBlockDeep(in_ch, in_ch, down=False), DBlockDeep(in_ch, out_ch, down)))
            else:
                self.blocks.append(DBlock(in_ch, out_ch, down, preactivation=i > 0))
            res = res // 2 if down else res
            key = str(res)
            if res in cfg.attn_res and key not in self.attn:  # after the first block that reaches res
                self.attn[key] = SelfAttention(out_ch)
                self.block_attn.append(key)
            else:
                self.block_attn.append(None)
            in_ch = out_ch
        self.linear = SNLinear(chans[-1], 1)
        self.embed = SNEmbedding(c_dim, chans[-1]) if c_dim > 0 else None
        ortho_init(self)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """img [N, C, R, R], c [N, c_dim] -> logits [N, 1]."""
        h = img.float()
        if self.input_conv is not None:
            h = self.input_conv(h)
        for block, attn in zip(self.blocks, self.block_attn):
            h = block(h)
            if attn is not None:
                h = self.attn[attn](h)
        h = F.relu(h).sum(dim=[2, 3])
        out = self.linear(h)
        if self.embed is not None:
            out = out + (self.embed(c.float()) * h).sum(dim=1, keepdim=True)
        return out
