"""StyleGAN2 generator (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN"): mapping network z -> w, synthesis network with a learned constant input,
modulated/demodulated convolutions, per-pixel noise and skip-connected toRGB outputs."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from bigtrain.config import require
from bigtrain.models.base import Generator
from bigtrain.models.common.growing import Growable
from bigtrain.models.common.layers import (EqualLinear, block_precision, channels_at, check_channel_base,
                                           normalize_2nd_moment)
from bigtrain.ops import ACTIVATIONS, bias_act, modulated_conv2d, setup_filter, upsample2d


class MappingNetwork(nn.Module):
    """z (and optional class c) -> w, broadcast to ``num_ws`` copies; tracks the mean w
    used by the truncation trick."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        self.embed = EqualLinear(c_dim, w_dim) if c_dim > 0 else None
        in_dim = (z_dim > 0) * z_dim + (c_dim > 0) * w_dim
        dims = [in_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            EqualLinear(dims[i], dims[i + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            for i in range(num_layers))
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        device = (z if z is not None else c).device.type
        with torch.autocast(device_type=device, enabled=False):  # small, and w feeds every layer: fp32
            return self._forward(z, c, truncation_psi, truncation_cutoff, update_emas)

    def _forward(self, z, c, truncation_psi, truncation_cutoff, update_emas) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for layer in self.layers:
            x = layer(x)
        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            assert self.w_avg_beta is not None and self.num_ws is not None
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+ optional 2x upsampling), noise, bias, activation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 use_noise: bool = True, activation: str = "lrelu", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, kernel_size: int = 3):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.activation = resolution, up, use_noise, activation
        self.conv_clamp, self.padding = conv_clamp, kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([1]))  # 1-d, not 0-d: DeepSpeed cannot broadcast 0-d params

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool = False, gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device,
                                dtype=x.dtype) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        # The bias and activation go in as the op's epilogue: on the GPU, demodulation, noise, bias and
        # activation are one kernel pass.
        return modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                                resample_filter=self.resample_filter, fused_modconv=fused_modconv,
                                bias=self.bias.to(x.dtype), act=self.activation, act_gain=self.act_gain * gain,
                                clamp=clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation: features -> image channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = False) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const | upsampling conv) -> conv -> toRGB added to the upsampled image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None, use_noise: bool = True):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, use_noise=use_noise,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, use_noise=use_noise,
                                    resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.amp_dtype: torch.dtype | None = None  # set by set_reduced_precision (StyleGAN2's scheme)

    def forward(self, x, img, ws_NLW: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = False,
                rgb_gain: float = 1.0):
        """rgb_gain < 1 fades this block's toRGB in over the upsampled image (progressive growing)."""
        ctx, x = block_precision(self, x, ws_NLW.device.type)
        with ctx:
            w_iter = iter(ws_NLW.unbind(dim=1))
            if self.conv0 is None:
                x = self.const.to(ws_NLW.dtype).unsqueeze(0).repeat(ws_NLW.shape[0], 1, 1, 1)
            else:
                x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
        y = y.float() if rgb_gain == 1 else y.float() * rgb_gain  # the RGB skip sum stays fp32
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int,
                 channel_max: int, resample_filter=(1, 3, 3, 1), conv_clamp: float | None = None,
                 use_noise: bool = True):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        self.blocks = nn.ModuleDict()
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels_at(res // 2, channel_base, channel_max) if res > 4 else 0
            out_ch = channels_at(res, channel_base, channel_max)
            block = SynthesisBlock(in_ch, out_ch, w_dim, res, img_channels, resample_filter=resample_filter,
                                   conv_clamp=conv_clamp, use_noise=use_noise)
            self.blocks[f"b{res}"] = block
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's toRGB; earlier toRGBs share the next block's first w

    def forward(self, ws_NLW: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = False,
                out_res: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        """Images at ``out_res`` (default: full): the blocks up to it run, the last one's toRGB
        scaled by ``alpha`` (lod-style growth of the skip architecture)."""
        out_res = out_res or self.img_resolution
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            if res > out_res:
                break
            block = self.blocks[f"b{res}"]
            x, img = block(x, img, ws_NLW.narrow(1, w_idx, block.num_conv + 1), noise_mode=noise_mode,
                           fused_modconv=fused_modconv, rgb_gain=alpha if res == out_res else 1.0)
            w_idx += block.num_conv
        return img


class StyleGAN2Generator(Growable, Generator):
    truncation_arg = "truncation_psi"  # what `bigtrain generate --trunc` sets
    truncation_off = 1.0  # psi 1: w as mapped
    truncation_check = 0.7
    has_w = True

    @dataclasses.dataclass
    class Config:
        z_dim: int = 512  # Latent z dimensionality.
        w_dim: int = 512  # Intermediate latent w dimensionality.
        mapping_layers: int = 8  # Depth of the mapping network.
        mapping_lr_mul: float = 0.01  # Learning-rate multiplier of the mapping network.
        w_avg_beta: float = 0.995  # Decay of the tracked mean w used for truncation.
        channel_base: int = 32768  # Channels at resolution r are min(channel_base / r, channel_max).
        channel_max: int = 512  # Cap on channels per layer.
        conv_clamp: float | None = None  # Clamp conv outputs to +-this (for reduced precision); null = off.
        use_noise: bool = True  # Per-pixel noise inputs with learned strength; tiny models may lean on them (see configs/demo).
        resample_filter: list[int] = dataclasses.field(default_factory=lambda: [1, 3, 3, 1])  # FIR taps for up/downsampling.

        def __post_init__(self):
            for k in ("z_dim", "w_dim", "channel_base", "channel_max"):
                require(getattr(self, k) >= 1, k, getattr(self, k), "must be >= 1")
            require(self.mapping_layers >= 1, "mapping_layers", self.mapping_layers, "must be >= 1")
            require(0 <= self.w_avg_beta < 1, "w_avg_beta", self.w_avg_beta, "must be in [0, 1)")
            require(self.conv_clamp is None or self.conv_clamp > 0, "conv_clamp", self.conv_clamp, "must be > 0 or null")

    def __init__(self, cfg: "StyleGAN2Generator.Config", img_resolution: int, img_channels: int, c_dim: int = 0):
        super().__init__(img_resolution)
        check_channel_base("generator", cfg.channel_base, img_resolution)
        self.cfg = cfg
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, c_dim, cfg.w_dim
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(cfg.w_dim, img_resolution, img_channels, cfg.channel_base,
                                          cfg.channel_max, cfg.resample_filter, cfg.conv_clamp, cfg.use_noise)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, c_dim, cfg.w_dim, self.num_ws, cfg.mapping_layers,
                                      cfg.mapping_lr_mul, cfg.w_avg_beta)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False,
                noise_mode: str = "random", fused_modconv: bool | None = None,
                style_mixing_prob: float = 0.0, return_ws: bool = False):
        """z [N, z_dim], c [N, c_dim] one-hot (or None) -> images [N, C, H, W] in about [-1, 1]
        (and the ws [N, num_ws, w_dim] that made them, with return_ws).
        fused_modconv=None picks the grouped-conv path for inference and the activation-
        scaling path in training, whichever is faster there. style_mixing_prob > 0 switches,
        with that probability, to the w of a second random z from a random layer on."""
        if fused_modconv is None:
            fused_modconv = not self.training
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        if style_mixing_prob > 0:
            cutoff = torch.randint(1, self.num_ws, [], device=ws.device)
            cutoff = torch.where(torch.rand([], device=ws.device) < style_mixing_prob, cutoff,
                                 torch.full_like(cutoff, self.num_ws))
            ws2 = self.mapping(torch.randn_like(z), c, update_emas=False)
            layer = torch.arange(self.num_ws, device=ws.device).view(1, -1, 1)
            ws = torch.where(layer < cutoff, ws, ws2)
        img = self.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv, out_res=self.stage_res,
                             alpha=self.alpha)
        return (img, ws) if return_ws else img

    def traceable(self, z, c, trunc):
        ws = self.mapping(z, c)
        w_avg = self.mapping.w_avg
        ws = w_avg + trunc * (ws - w_avg)
        return self.synthesis(ws, noise_mode="const", fused_modconv=False, out_res=self.stage_res, alpha=self.alpha)

    def truncation_centre(self) -> torch.Tensor:
        return self.mapping.w_avg

    # ---------------------------------------------------------------- progressive growing
    def stage_resolutions(self) -> list[int]:
        return list(self.synthesis.block_resolutions)

    def active_modules(self) -> list[nn.Module]:
        return [self.mapping] + [self.synthesis.blocks[f"b{r}"] for r in self.stage_resolutions() if r <= self.stage_res]

    def upsample(self, img: torch.Tensor) -> torch.Tensor:
        """2x upsampling as the skip connections do it (the FIR filter)."""
        return upsample2d(img, self.synthesis.blocks["b4"].resample_filter)
