"""The run config: one dataclass per section, each beside (or named after) what it configures.

YAML keys are exactly the field names. ``generator`` and ``discriminator`` take the Config
of the chosen ``model`` family, so their keys are checked against that family's schema.
"""
from __future__ import annotations

from typing import Literal

import dataclasses
from typing import Any

from bigtrain.checkpoint import CheckpointConfig
from bigtrain.config import deep_merge, require
from bigtrain.data import DataConfig
from bigtrain.distributed.strategy import StrategyConfig
from bigtrain.losses import AugmentConfig, GANLoss
from bigtrain.metrics.training import MetricsConfig
from bigtrain.models import family_names, get_family
from bigtrain.train.schedule import GrowConfig


@dataclasses.dataclass
class RunConfig:
    dir: str = "runs/default"  # Run directory: checkpoints, samples, TensorBoard events, stats.jsonl, config.yaml.
    seed: int = 0  # Seeds weights, latents, noise and the data order.
    num_threads: int = 0  # torch CPU threads; 0 = torch's default (one per core).


@dataclasses.dataclass
class LoopConfig:
    total_kimg: float = 25000  # Training length in thousands of real images shown to D.
    batch_size: int = 32  # Global batch: images per optimizer step, summed over ranks and accumulation rounds.
    batch_gpu: int | None = None  # Images per device per forward; null = batch_size / world_size (no accumulation).
    g_lr: float = 0.0025  # Generator Adam learning rate.
    d_lr: float = 0.0025  # Discriminator Adam learning rate.
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.99])  # Adam betas (both nets).
    eps: float = 1.0e-8  # Adam epsilon.
    ema_halflife_kimg: float = 10.0  # Half-life of the G_ema weight average, in thousands of images.
    ema_rampup: float | None = 0.05  # EMA ramp-up: half-life capped at nimg * this early on; null = no ramp-up.
    ema_start_kimg: float = 0.0  # G_ema copies G until this many thousand images, then averages (BigGAN starts it late).
    max_nonfinite_steps: int = 10  # Stop with an error after this many iterations in a row with a NaN/Inf loss.
    num_d_steps: int = 1  # D steps per G step, each on fresh reals (BigGAN uses 2); nimg counts every real image D sees.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # Forward/backward precision: bf16 autocast; fp16 autocast with a gradient scaler per net. Weights, optimizer state and regularizer sums stay fp32.
    skip_nonfinite_on_device: bool = True  # GPU (single, ddp): a step with a NaN/Inf loss is skipped by the fused optimizer on the device and counted at the next tick, instead of the host waiting for the GPU once per phase to decide.
    cudnn_benchmark: bool = True  # GPU: cuDNN times its convolution algorithms for each new shape and keeps the fastest (the first iterations are slower).
    channels_last: bool = False  # GPU throughput experiment: G's and D's convolution weights and activations in the channels_last (NHWC) memory layout end to end, the layout cuDNN's tensor-core convolutions work in (no conversions around them); bigtrain's kernels take it as it is. Same results; not yet measured faster (the bf16-kernels-cl row of `bigtrain bench gpu`).
    conv_double_backward: Literal["wgrad", "autograd"] = "wgrad"  # How R1, path length and the gradient penalty differentiate through convolutions: wgrad = the weight share of the second-order gradient by the weight-gradient kernel (as first-order backward does); autograd = torch's generic double backward, a convolution with the feature map as its kernel (slow on cuDNN). Same values to rounding.
    modconv_epilogue: Literal["fused", "separate"] = "fused"  # StyleGAN2's layers in training (the activation-scaling path): fused = demodulation, noise, bias and activation in one bias_act pass, the output in the convolution's dtype; separate = a multiply and an add before bias_act, as before session 20 (in 16-bit blocks the float32 coefficients promote the output to float32). The grouped path (G_ema's samples, metrics, generate) passes the noise to bias_act either way. For the bf16-kernels-sep-epilogue row of `bigtrain bench gpu`.
    allow_tf32: bool = False  # GPU: float32 convolutions and matmuls in TF32 on Ampere and newer (faster, about 1e-3 relative error); off as in NVlabs' StyleGAN2.
    init_from: str | None = None  # Fine-tuning: start G, D (when the file has it) and G_ema from an NVlabs pickle, a bigtrain checkpoint (or a run dir: its newest), or an export folder; the optimizers start fresh and kimg at 0. Ignored on resume.
    freeze_d: int = 0  # FreezeD: keep D's this many highest-resolution blocks at their starting weights; 0 = train all of D.
    reduced_precision_res: int | None = None  # StyleGAN2's scheme: only the N highest-resolution blocks of G and D run in bf16/fp16 (pair with conv_clamp: 256); null = autocast everywhere.

    def __post_init__(self):
        require(self.total_kimg > 0, "total_kimg", self.total_kimg, "must be > 0")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        require(self.batch_gpu is None or self.batch_gpu >= 1, "batch_gpu", self.batch_gpu, "must be >= 1 or null")
        for k in ("g_lr", "d_lr", "eps"):
            require(getattr(self, k) > 0, k, getattr(self, k), "must be > 0")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", self.betas,
                "must be two numbers in [0, 1)")
        require(self.ema_start_kimg >= 0, "ema_start_kimg", self.ema_start_kimg, "must be >= 0")
        require(self.ema_halflife_kimg >= 0, "ema_halflife_kimg", self.ema_halflife_kimg, "must be >= 0")
        require(self.max_nonfinite_steps >= 1, "max_nonfinite_steps", self.max_nonfinite_steps, "must be >= 1")
        require(self.num_d_steps >= 1, "num_d_steps", self.num_d_steps, "must be >= 1")
        require(self.freeze_d >= 0, "freeze_d", self.freeze_d, "must be >= 0")
        require(self.init_from is None or bool(self.init_from.strip()), "init_from", self.init_from,
                "must be a path or null")
        require(self.reduced_precision_res is None or self.reduced_precision_res >= 1, "reduced_precision_res",
                self.reduced_precision_res, "must be >= 1 or null")

    def rounds(self, world_size: int, source: str = "the config", batch_size: int | None = None,
               key: str = "train.batch_size") -> tuple[int, int]:
        """-> (batch_gpu, accumulation rounds) for ``batch_size`` (default train.batch_size);
        a clear error when the numbers don't divide."""
        batch_size = batch_size or self.batch_size
        per_rank, rem = divmod(batch_size, world_size)
        if rem or per_rank % (self.batch_gpu or per_rank):
            raise ValueError(f"{key}={batch_size} must equal world_size={world_size} x "
                             f"train.batch_gpu={self.batch_gpu} x accumulation rounds (a whole number), "
                             f"i.e. be divisible by world_size x batch_gpu ({source})")
        batch_gpu = self.batch_gpu or per_rank
        return batch_gpu, per_rank // batch_gpu


@dataclasses.dataclass
class LogConfig:
    tick_kimg: float = 4.0  # Maintenance tick every this many kimg: console line, TensorBoard scalars, stats.jsonl.
    image_ticks: int = 1  # Save a G_ema sample grid every this many ticks; 0 = never.
    grid_size: int = 64  # Images in the sample grid (fixed seeds 0..grid_size-1).
    progress_bar: bool = True  # tqdm bar with ETA on rank 0 when the console is a terminal.
    standing_stats: int = 0  # Batch-norm generators (BigGAN): re-estimate G_ema's BN statistics over this many batches before each sample grid; 0 = use the running ones.

    def __post_init__(self):
        require(self.tick_kimg > 0, "tick_kimg", self.tick_kimg, "must be > 0")
        require(self.image_ticks >= 0, "image_ticks", self.image_ticks, "must be >= 0")
        require(self.grid_size >= 1, "grid_size", self.grid_size, "must be >= 1")
        require(self.standing_stats >= 0, "standing_stats", self.standing_stats, "must be >= 0")


@dataclasses.dataclass
class TrainConfig:
    model: str = "stylegan2"  # Model family, by registered name.
    preset: str | None = None  # A preset of the family (e.g. res256); its values sit between defaults and this file.
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    generator: Any = None  # The family's generator Config (see its model folder).
    discriminator: Any = None  # The family's discriminator Config.
    loss: GANLoss.Config = dataclasses.field(default_factory=GANLoss.Config)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    train: LoopConfig = dataclasses.field(default_factory=LoopConfig)
    grow: GrowConfig = dataclasses.field(default_factory=GrowConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    distributed: StrategyConfig = dataclasses.field(default_factory=StrategyConfig)

    @classmethod
    def _field_types(cls, data: dict) -> dict[str, type]:
        name = data.get("model", "stylegan2")
        try:
            spec = get_family(name)
        except (KeyError, TypeError):
            spec = None
        require(spec is not None, "model", name, f"unknown model family; registered: {', '.join(family_names())}")
        return {"generator": spec.generator.Config, "discriminator": spec.discriminator.Config}

    @classmethod
    def _preset_data(cls, data: dict) -> dict:
        """Family defaults, then the named preset; the run file and overrides go on top."""
        try:
            spec = get_family(data.get("model", "stylegan2"))
        except (KeyError, TypeError):
            return {}  # _field_types reports the unknown family with its source
        out = dict(spec.defaults)
        name = data.get("preset")
        if name is not None:
            require(name in spec.presets, "preset", name,
                    f"not a {spec.name} preset; choose one of {', '.join(spec.presets)}")
            out = deep_merge(out, spec.presets[name])
        return out
