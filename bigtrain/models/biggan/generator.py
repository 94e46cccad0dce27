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
import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from bigtrain.config import require
from bigtrain.models.base import Generator
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
        h = self.conv1(_up(self.bn1(x, cond, "relu")))
        h = self.conv2(self.bn2(h, cond, "relu"))
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
        h = self.conv1(self.bn1(x, cond, "relu"))
        h = self.bn2(h, cond, "relu")
        if self.up:
            h, x = _up(h), _up(x)
        h = self.conv3(self.bn3(self.conv2(h), cond, "relu"))
        h = self.conv4(self.bn4(h, cond, "relu"))
        return h + x[:, :self.out_ch]


class BigGANGenerator(Generator):
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
    truncation_off = 0.0  # a threshold <= 0 in an exported graph's input: no truncation
    truncation_check = 1.0
    uses_batch_norm = True  # conditional BN: standing statistics apply

    def traceable(self, z, c, trunc):
        z = torch.where(trunc > 0, truncate_z_traceable(z, trunc.clamp(min=1e-3)), z)
        return self(z, c)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation: float | None = None,
                update_emas: bool = False, noise_mode: str = "random") -> torch.Tensor:
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
        return torch.tanh(self.out_conv(self.out_bn(h, "relu")))

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


# BigGAN's truncation maps z through the normal CDF onto a truncated normal; ONNX has Erf but
# neither Erfc nor an inverse, and float32 1 + erf(x) loses the tails. So: the lower tail only
# (the upper by symmetry), Phi(x) for x <= 0 from an erfc approximation with relative error
# below 1.2e-7 (the Chebyshev fit in Numerical Recipes, 6.2), and the quantile from Acklam's
# rational approximation (relative error 1.2e-9) refined by one Newton step.
_ERFC = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196,
         1.00002368, -1.26551223)
_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
      -3.066479806614716e+01, 2.506628277459239e+00)
_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
      -1.328068155288572e+01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
      4.374664141464968e+00, 2.938163982698783e+00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
_TINY = 1e-37  # above float32's smallest normal: log() of it is finite


def _poly(coefs, x):
    out = torch.full_like(x, coefs[0])
    for c in coefs[1:]:
        out = out * x + c
    return out


def ndtr_lower(x: torch.Tensor) -> torch.Tensor:
    """Phi(x) for x <= 0, accurate relative to its size even far out in the tail."""
    a = -x / math.sqrt(2)
    t = 1 / (1 + 0.5 * a)
    return 0.5 * t * torch.exp(-a * a + _poly(_ERFC, t))


def ndtri_lower(p: torch.Tensor) -> torch.Tensor:
    """The standard normal quantile for p in (0, 0.5], from elementwise ops that ONNX has."""
    p_low = 0.02425
    q = p - 0.5
    r = q * q
    central = q * _poly(_A, r) / (_poly(_B, r) * r + 1)
    t = torch.sqrt(-2 * torch.log(p))
    tail = _poly(_C, t) / (_poly(_D, t) * t + 1)
    x = torch.where(p > p_low, central, tail).clamp(max=0)
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return x - (ndtr_lower(x) - p) / pdf


def truncate_z_traceable(z: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """BigGAN's truncation (truncate_z above) with a tensor threshold,
    computed on the lower half and mirrored, clamped to [-threshold, threshold]."""
    lo = ndtr_lower(-threshold)
    p = (lo + (1 - 2 * lo) * ndtr_lower(-z.abs())).clamp(min=_TINY)
    x = -ndtri_lower(p) * torch.sign(z)
    return torch.minimum(torch.maximum(x, -threshold), threshold)
