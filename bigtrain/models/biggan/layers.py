"""BigGAN's layers: spectrally normalized linear and conv layers, batch norm whose statistics
can be synchronized across ranks (cross-replica BN), class-conditional BN and self-attention.

Spectral normalization (Miyato et al. 2018) divides a weight by an estimate of its largest
singular value, kept in a buffer ``u`` and refined by power iteration in training mode. The
iteration runs once per *optimizer step* (the trainer calls ``weights_changed()`` after each step
of the net it took, or with the device's flag of whether it took it; the next training forward
iterates), not per forward call as in the paper's code: the estimate then does not depend on how
many times a step calls the network, which keeps accumulation rounds and world sizes exactly
equivalent under every strategy.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bigtrain.config import require
from bigtrain.ops.bias_act import bias_act


class SpectralNorm:
    """Mixin for nn.Linear / nn.Conv2d: ``sn_weight()`` is the weight over its spectral norm."""

    def _init_sn(self, num_iters: int = 1, eps: float = 1e-8) -> None:
        self.sn_iters, self.sn_eps = num_iters, eps
        out = self.weight.shape[0]
        self.register_buffer("sn_u", F.normalize(torch.randn(out), dim=0, eps=eps))
        self.register_buffer("sn_sigma", torch.ones([1]))  # the last estimate, for logging and tests
        # 1 when u is refined for the current weights; a buffer, so resume iterates exactly when
        # the uninterrupted run would have.
        self.register_buffer("sn_fresh", torch.zeros([1]))

    def weights_changed(self, taken: torch.Tensor | None = None) -> None:
        """Called after an optimizer step: the next training forward refines u. ``taken``: the
        device's 0-dim flag, 1 when the step was taken and 0 when it was skipped for a non-finite
        loss (the trainer's skip on the device; no host sync); None: it was taken."""
        if taken is None:
            self.sn_fresh.zero_()
        else:
            self.sn_fresh.mul_(1 - taken.to(self.sn_fresh.dtype))

    def sn_weight(self) -> torch.Tensor:
        # In float32 whatever autocast says: a bf16 power iteration would blur sigma, and torch.dot
        # refuses the float32 u against a bf16 product. The layer's own op still autocasts.
        with torch.autocast(self.weight.device.type, enabled=False):
            return self._sn_weight_fp32()

    def _sn_weight_fp32(self) -> torch.Tensor:
        W = self.weight.flatten(1)
        with torch.no_grad():
            u = self.sn_u
            if self.training:
                # Iterate, and keep the result only if u is stale: no host sync on the flag.
                new = u
                for _ in range(self.sn_iters):
                    v = F.normalize(W.t() @ new, dim=0, eps=self.sn_eps)
                    new = F.normalize(W @ v, dim=0, eps=self.sn_eps)
                u = torch.where(self.sn_fresh.bool(), u, new)
                self.sn_u.copy_(u)
                self.sn_fresh.fill_(1)
            v = F.normalize(W.t() @ u, dim=0, eps=self.sn_eps)
        sigma = torch.dot(u, W @ v)  # differentiable in W, as in the paper
        self.sn_sigma.copy_(sigma.detach().reshape(1))
        return self.weight / sigma


class SNLinear(nn.Linear, SpectralNorm):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, sn_iters: int = 1):
        super().__init__(in_features, out_features, bias)
        self._init_sn(sn_iters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.sn_weight(), self.bias)


class SNConv2d(nn.Conv2d, SpectralNorm):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True, sn_iters: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self._init_sn(sn_iters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.sn_weight(), self.bias)


class SNEmbedding(nn.Linear, SpectralNorm):
    """Class embedding from a one-hot c (a bias-free linear map, spectrally normalized in D)."""

    def __init__(self, num_classes: int, dim: int, sn: bool = True):
        super().__init__(num_classes, dim, bias=False)
        self.sn = sn
        nn.init.normal_(self.weight, std=1.0)  # the rows are the embeddings
        self._init_sn()

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return F.linear(c, self.sn_weight() if self.sn else self.weight)


class BatchNorm(nn.Module):
    """Batch norm over [N, C, H, W] without affine parameters of its own (the conditional
    gains and biases come from outside), with statistics that a distributed strategy can
    synchronize over ranks: it sets ``all_reduce`` to a differentiable sum over the process
    group, so every rank normalizes by the statistics of the global batch (cross-replica BN).

    The normalization, the gain and bias after it and the activation run as one op:
    ``act(x * scale + shift)`` with a scale and a shift per sample and channel, folded from the
    statistics, the gain and the bias (small [N, C] tensors), in one bias_act pass over the
    activations where the textbook order takes five (subtract, multiply, multiply, add,
    activation). Autograd differentiates through the fold, statistics included. The scale and shift
    stay float32 into bias_act, which computes ``x * scale + shift`` in float32 before rounding to a
    16-bit x's dtype: they can be large and cancel (a channel whose mean dwarfs its spread).

    ``momentum=None`` accumulates a plain average over batches (used for standing statistics).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.zeros([], dtype=torch.long))
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.enabled = True  # False: no normalization (affine parameters still apply)

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor, act: str = "linear", gain: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``act(BN(x) * gain + bias)``: ``gain`` and ``bias`` [N, C] (a conditional BN's), or the
        module's own affine parameters when it has them."""
        if self.weight is not None:
            gain, bias = self.weight, self.bias
        scale, shift = self.fold(x, gain, bias)
        return bias_act(x, shift, act=act, gain=1.0, scale=scale)

    def fold(self, x: torch.Tensor, gain: torch.Tensor | None,
             bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each [N, C], with ``x * scale + shift == BN(x) * gain + bias``; ``gain``
        and ``bias`` are [N, C], [C] or None (1 and 0)."""
        N, C = x.shape[:2]
        if self.enabled:
            mean, var = self._stats(x)
            rstd = torch.rsqrt(var + self.eps)
            scale = rstd if gain is None else gain * rstd
            shift = -mean * scale if bias is None else bias - mean * scale
        else:
            scale = torch.ones(C, device=x.device) if gain is None else gain
            shift = torch.zeros(C, device=x.device) if bias is None else bias
        return scale.expand(N, C), shift.expand(N, C)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (biased) variance per channel, in float32 (or float64 for a float64 x): the
        batch's in training (all ranks' with ``all_reduce``), which also updates the running ones;
        else the running ones. (torch.var_mean would be one pass and exact where the mean dwarfs the
        spread, but on the CPU its forward took 6x and its forward + backward 2x the time of these
        sums: session 21, a [8, 192, 64, 64] float32 batch.)"""
        if self.training:
            xf = x.to(torch.promote_types(x.dtype, torch.float32))
            C = x.shape[1]
            count = torch.full([1], xf.numel() / C, device=x.device, dtype=xf.dtype)
            stats = torch.cat([xf.sum(dim=[0, 2, 3]), xf.square().sum(dim=[0, 2, 3]), count])
            if self.all_reduce is not None:
                stats = self.all_reduce(stats)
            n = stats[-1]
            mean = stats[:C] / n
            var = (stats[C:2 * C] / n - mean.square()).clamp(min=0)
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = 1 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp(min=1), m)
            return mean, var
        return self.running_mean, self.running_var


class ConditionalBatchNorm(nn.Module):
    """BN whose per-channel gain (1 + .) and bias are linear projections of a conditioning vector
    (the shared class embedding and this block's latent chunk)."""

    def __init__(self, num_features: int, cond_dim: int, eps: float = 1e-5):
        super().__init__()
        self.bn = BatchNorm(num_features, eps=eps)
        self.gain = SNLinear(cond_dim, num_features, bias=False)
        self.bias = SNLinear(cond_dim, num_features, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, act: str = "linear") -> torch.Tensor:
        """``act(BN(x) * (1 + gain(cond)) + bias(cond))``, in one pass over x (BatchNorm.fold)."""
        return self.bn(x, act, 1 + self.gain(cond), self.bias(cond))


class SelfAttention(nn.Module):
    """SAGAN self-attention: keys and values on a 2x max-pooled map, added with a learned gain
    that starts at 0 (so the block starts as the identity)."""

    def __init__(self, channels: int):
        super().__init__()
        self.theta = SNConv2d(channels, channels // 8, 1, bias=False)
        self.phi = SNConv2d(channels, channels // 8, 1, bias=False)
        self.g = SNConv2d(channels, channels // 2, 1, bias=False)
        self.o = SNConv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros([1]))  # 1-d: DeepSpeed cannot broadcast 0-d parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        theta = self.theta(x).flatten(2)                       # [N, C/8, HW]
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)          # [N, C/8, HW/4]
        g = F.max_pool2d(self.g(x), 2).flatten(2)              # [N, C/2, HW/4]
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # [N, HW, HW/4]
        o = self.o((g @ attn.transpose(1, 2)).view(N, C // 2, H, W))
        return x + self.gamma * o


# ------------------------------------------------------------------------------ shared by G and D
def ortho_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and not isinstance(m, SNEmbedding):
            nn.init.orthogonal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_arch(cfg) -> None:
    require(cfg.ch >= 1, "ch", cfg.ch, "must be >= 1")
    require(all(m >= 1 for m in cfg.ch_mult), "ch_mult", cfg.ch_mult, "must be positive")
    require(all(r >= 4 and r & (r - 1) == 0 for r in cfg.attn_res), "attn_res", cfg.attn_res,
            "must list powers of 2 >= 4")
