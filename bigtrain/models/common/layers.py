"""Building blocks shared by model families: equalized-learning-rate layers and
minibatch standard deviation.

Equalized learning rate (Karras et al. 2018): weights are stored as N(0, 1) / lr_mul and
scaled by ``lr_mul / sqrt(fan_in)`` at run time, so Adam's per-parameter step size acts
the same on every layer regardless of its fan-in.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from bigtrain.ops import ACTIVATIONS, bias_act, conv2d_resample, setup_filter


def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    """2x nearest-neighbour upsampling (ProGAN's and BigGAN's)."""
    return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Channels of a layer at resolution ``res``: min(channel_base / res, channel_max)."""
    return min(channel_base // res, channel_max)


def check_channel_base(section: str, channel_base: int, img_resolution: int) -> None:
    """A ValueError naming ``section.channel_base`` when the highest resolution would get no channels
    (the trainer reports it as a config error)."""
    if channel_base // img_resolution < 1:
        raise ValueError(f"key '{section}.channel_base': {channel_base} gives no channels at {img_resolution}x"
                         f"{img_resolution} (channels are min(channel_base // resolution, channel_max)); "
                         f"set it to at least {img_resolution}")


class EqualLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: str = "linear", lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x_NI: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x_NI.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x_NI.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x_NI, w.t())
        return bias_act(x_NI.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


class EqualConv2d(nn.Module):
    """Conv with equalized lr, optional FIR up/downsampling, bias + activation + clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1,
                 resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x_NCHW: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x_NCHW.dtype) * self.weight_gain
        x = conv2d_resample(x_NCHW, w, f=self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MinibatchStd(nn.Module):
    """Append the across-group standard deviation of features as extra channels, so D can
    see a lack of variety in a batch (Karras et al. 2018)."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x_NCHW: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x_NCHW.shape
        # Largest group size <= group_size dividing the batch (shapes are static per call).
        G = max(g for g in range(1, min(self.group_size, N) + 1) if N % g == 0)
        F = self.num_channels
        y = x_NCHW.reshape(G, -1, F, C // F, H, W)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])             # [n, F]
        y = y.reshape(-1, F, 1, 1).repeat(G, 1, H, W)          # [N, F, H, W]
        return torch.cat([x_NCHW, y], dim=1)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def block_precision(block: nn.Module, x: torch.Tensor | None, device_type: str):
    """(context, x) for a block's forward under StyleGAN2's mixed-precision scheme: autocast to
    the block's ``amp_dtype`` when set (see set_reduced_precision), else fp32 with x cast up."""
    dtype = getattr(block, "amp_dtype", None)
    if dtype is not None:
        return torch.autocast(device_type=device_type, dtype=dtype), x
    return contextlib.nullcontext(), (x.float() if x is not None else None)


def set_reduced_precision(net: nn.Module, dtype: torch.dtype, num_res: int, img_resolution: int) -> list[int]:
    """Run the blocks at the ``num_res`` highest resolutions of ``net`` in ``dtype`` (blocks
    declare a ``resolution``); returns those resolutions."""
    min_res = img_resolution // 2 ** (num_res - 1)
    chosen = []
    for m in net.modules():
        if hasattr(m, "amp_dtype") and hasattr(m, "resolution"):
            m.amp_dtype = dtype if m.resolution >= min_res else None
            if m.amp_dtype is not None:
                chosen.append(m.resolution)
    return sorted(set(chosen))
