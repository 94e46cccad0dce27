"""BigGAN generator (Brock, Donahue, Simonyan 2019, "Large Scale GAN Training for High Fidelity
Natural Image Synthesis") and BigGAN-deep's.

z split into chunks (hierarchical latents): the first goes through a linear layer to the 4x4
features, each residual up-block gets the next chunk joined to a shared class embedding, which
linear projections turn into its conditional-BN gains and biases. Self-attention at the configured
resolutions; BN, ReLU, a 3x3 conv and tanh at the output. Spectral normalization on every weight
except the shared embedding. BigGAN-deep (``deep: true``): bottleneck blocks, two per resolution,
the whole z joined to the class embedding for every block, and channel-dropping / channel-adding
skips instead of 1x1 convs.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.config import require
from bigtrain.models.common.layers import upsample_nearest as _up

from .layers import (BatchNorm, ConditionalBatchNorm, SelfAttention, SNConv2d, SNEmbedding, SNLinear, check_arch,
                     ortho_init)


class GBlock(nn.Module):
    """BN(cond) -> ReLU -> up -> conv3x3 -> BN(cond) -> ReLU -> conv3x3, plus up -> conv1x1."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int):
        super().__init__()
        self.bn1 = ConditionalBatchNorm(in_ch, cond_dim)
        self.conv1 = SNConv2d(in_ch, out_ch, 3)
        self.bn2 = ConditionalBatchNorm(out_ch, cond_dim)
        self.conv2 = SNConv2d(out_ch, out_ch, 3)
        self.conv_sc = SNConv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_up(F.relu(self.bn1(x, cond))))
        h = self.conv2(F.relu(self.bn2(h, cond)))
        return h + self.conv_sc(_up(x))


class GBlockDeep(nn.Module):
    """Bottleneck: 1x1 down to in/4 channels, (up), two 3x3, 1x1 out, each after BN(cond) + ReLU;
    the skip drops channels (out < in) and upsamples."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, up: bool):
        super().__init__()
        mid = in_ch // 4
        self.up, self.out_ch = up, out_ch
        self.bn1, self.conv1 = ConditionalBatchNorm(in_ch, cond_dim), SNConv2d(in_ch, mid, 1)
        self.bn2, self.conv2 = ConditionalBatchNorm(mid, cond_dim), SNConv2d(mid, mid, 3)
        self.bn3, self.conv3 = ConditionalBatchNorm(mid, cond_dim), SNConv2d(mid, mid, 3)
        self.bn4, self.conv4 = ConditionalBatchNorm(mid, cond_dim), SNConv2d(mid, out_ch, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x, cond)))
        h = F.relu(self.bn2(h, cond))
        if self.up:
            h, x = _up(h), _up(x)
        h = self.conv3(F.relu(self.bn3(self.conv2(h), cond)))
        h = self.conv4(F.relu(self.bn4(h, cond)))
        return h + x[:, :self.out_ch]


class BigGANGenerator(nn.Module):
    @dataclasses.dataclass
    class Config:
        z_dim: int = 120  # Latent z dimensionality; BigGAN splits it into equal chunks, one for the input layer and one per block.
        shared_dim: int = 128  # Dimension of the shared class embedding (conditional models).
        ch: int = 96  # Channel unit; channels at each resolution are ch x ch_mult.
        ch_mult: list[int] = dataclasses.field(default_factory=lambda: [16, 16, 8, 4, 2, 1])  # Channel multipliers from 4x4 up to the output resolution (one per resolution).
        attn_res: list[int] = dataclasses.field(default_factory=lambda: [64])  # Resolutions with self-attention after their block.
        deep: bool = False  # BigGAN-deep: bottleneck blocks, two per resolution, z not split.
        norm: Literal["batch", "none"] = "batch"  # batch: (cross-replica) batch norm, the paper's; none: conditional gains and biases only, so samples do not interact (what makes accumulation rounds exact).
        bn_eps: float = 1e-5  # Batch-norm epsilon.

        def __post_init__(self):
            require(self.z_dim >= 1, "z_dim", self.z_dim, "must be >= 1")
            require(self.shared_dim >= 1, "shared_dim", self.shared_dim, "must be >= 1")
            check_arch(self)

    def __init__(self, cfg: "BigGANGenerator.Config", img_resolution: int, img_channels: int, c_dim: int = 0):
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.c_dim, self.img_resolution = cfg.z_dim, c_dim, img_resolution
        resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
        if len(cfg.ch_mult) != len(resolutions):
            raise ValueError(f"generator.ch_mult needs {len(resolutions)} entries for {img_resolution}x{img_resolution} "
                             f"(one per resolution 4..{img_resolution}), got {cfg.ch_mult}")
        chans = [cfg.ch * m for m in cfg.ch_mult]
        self.shared = SNEmbedding(c_dim, cfg.shared_dim, sn=False) if c_dim > 0 else None
        e = cfg.shared_dim if c_dim > 0 else 0
        if cfg.deep:
            self.chunk, first_in, cond_dim = 0, cfg.z_dim + e, cfg.z_dim + e
        else:
            num_slots = len(resolutions)  # the input layer + one per up-block
            if cfg.z_dim % num_slots:
                raise ValueError(f"generator.z_dim={cfg.z_dim} must split into {num_slots} equal chunks "
                                 f"(the input layer and {num_slots - 1} blocks)")
            self.chunk = cfg.z_dim // num_slots
            first_in, cond_dim = self.chunk, self.chunk + e
        self.linear = SNLinear(first_in, chans[0] * 16)
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        for i, res in enumerate(resolutions[1:]):
            if cfg.deep:
                self.blocks.append(nn.ModuleList([GBlockDeep(chans[i], chans[i], cond_dim, up=False),
                                                  GBlockDeep(chans[i], chans[i + 1], cond_dim, up=True)]))
            else:
                self.blocks.append(GBlock(chans[i], chans[i + 1], cond_dim))
            if res in cfg.attn_res:
                self.attn[str(res)] = SelfAttention(chans[i + 1])
        self.block_res = resolutions[1:]
        self.out_bn = BatchNorm(chans[-1], eps=cfg.bn_eps, affine=True)
        self.out_conv = SNConv2d(chans[-1], img_channels, 3)
        for m in self.modules():
            if isinstance(m, BatchNorm):
                m.eps, m.enabled = cfg.bn_eps, cfg.norm == "batch"
        ortho_init(self)

    truncation_arg = "truncation"  # what `bigtrain generate --trunc` sets

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation: float | None = None,
                update_emas: bool = False, noise_mode: str = "random", **unused) -> torch.Tensor:
        """z [N, z_dim], c [N, c_dim] one-hot -> images [N, C, R, R] in [-1, 1] (tanh).
        ``truncation`` t is the truncation trick: z mapped onto a normal truncated to [-t, t]."""
        z = z.float()
        if truncation is not None:
            if truncation <= 0:
                raise ValueError(f"BigGAN's truncation threshold must be > 0, got {truncation}")
            z = truncate_z(z, truncation)
        y = self.shared(c.float()) if self.shared is not None else None
        if self.cfg.deep:
            cond = z if y is None else torch.cat([z, y], dim=1)
            conds = [cond] * len(self.blocks)
            h = self.linear(cond)
        else:
            zs = z.split(self.chunk, dim=1)
            conds = [zc if y is None else torch.cat([zc, y], dim=1) for zc in zs[1:]]
            h = self.linear(zs[0])
        h = h.view(z.shape[0], -1, 4, 4)
        for res, block, cond in zip(self.block_res, self.blocks, conds):
            for b in (block if self.cfg.deep else [block]):
                h = b(h, cond)
            if str(res) in self.attn:
                h = self.attn[str(res)](h)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))

    def ortho_parameters(self) -> list[nn.Parameter]:
        """What orthogonal regularization applies to: every weight matrix but the shared embedding."""
        skip = {id(p) for p in self.shared.parameters()} if self.shared is not None else set()
        return [p for p in self.parameters() if p.ndim >= 2 and id(p) not in skip]


def truncate_z(z: torch.Tensor, threshold: float) -> torch.Tensor:
    """The truncation trick of BigGAN as a deterministic map: a standard-normal z goes through
    its CDF onto the interval of a normal truncated to [-threshold, threshold], so a seed gives the
    same truncated latent on every run (resampling would need fresh randomness)."""
    lo = torch.special.ndtr(torch.tensor(-threshold, dtype=torch.float64))
    p = torch.special.ndtr(z.double())
    return torch.special.ndtri(lo + (1 - 2 * lo) * p).to(z.dtype)
