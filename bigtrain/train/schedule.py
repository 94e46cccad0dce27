"""Progressive growing (Karras et al. 2018): which resolution, fade-in alpha, batch size and
learning rates apply after ``nimg`` images.

The timeline, in images shown to D: ``stable_kimg`` at ``start_res``; then for every higher
resolution a fade-in of ``fade_kimg`` (alpha rising linearly from 0 to 1, the new block blended
with the upsampled output of the previous one) followed by ``stable_kimg`` at alpha 1. The
final resolution keeps training at alpha 1 until ``train.total_kimg``.

``stage_at`` is a pure function of nimg, which is what makes resume in the middle of a fade-in
continue at exactly the same alpha. A stage switches at the first iteration that starts at or
after its boundary.
"""
from __future__ import annotations

import dataclasses
import math

from bigtrain.config import ConfigError, require


def _is_pow2(r: int) -> bool:
    return r >= 4 and r & (r - 1) == 0


@dataclasses.dataclass
class GrowConfig:
    start_res: int | None = None  # Progressive growing: first training resolution (a power of 2 >= 4, below the data's); null = train at full resolution throughout.
    fade_kimg: float = 600.0  # Thousands of images over which each new resolution fades in (alpha 0 -> 1).
    stable_kimg: float = 600.0  # Thousands of images at each resolution before the next fade-in (also at start_res); the final resolution trains on to total_kimg.
    batch_size: dict[str, int] = dataclasses.field(default_factory=dict)  # Global batch per resolution, e.g. {4: 128, 8: 64}; missing resolutions use train.batch_size.
    g_lr: dict[str, float] = dataclasses.field(default_factory=dict)  # Generator lr per resolution, e.g. {64: 0.0015}; missing ones use train.g_lr.
    d_lr: dict[str, float] = dataclasses.field(default_factory=dict)  # Discriminator lr per resolution; missing ones use train.d_lr.

    def __post_init__(self):
        require(self.start_res is None or _is_pow2(self.start_res), "start_res", self.start_res,
                "must be a power of 2 >= 4, or null")
        require(self.fade_kimg > 0, "fade_kimg", self.fade_kimg, "must be > 0")
        require(self.stable_kimg >= 0, "stable_kimg", self.stable_kimg, "must be >= 0")
        for name in ("batch_size", "g_lr", "d_lr"):
            table = getattr(self, name)
            for k, v in table.items():
                require(k.isdigit() and _is_pow2(int(k)), f"{name}.{k}", v,
                        "keys must be resolutions (powers of 2 >= 4)")
                require(v > 0, f"{name}.{k}", v, "must be > 0")

    @property
    def enabled(self) -> bool:
        return self.start_res is not None


@dataclasses.dataclass(frozen=True)
class Stage:
    resolution: int  # images G makes and D sees at this step
    alpha: float  # fade-in of the newest block: 0 = previous resolution upsampled, 1 = new block only
    batch_size: int  # global batch
    g_lr: float
    d_lr: float

    @property
    def fading(self) -> bool:
        return self.alpha < 1

    @property
    def key(self) -> tuple[int, bool]:
        """What fixes the set of parameters in use: the resolution, and whether a fade is on."""
        return self.resolution, self.fading


def resolutions(grow: GrowConfig, final_res: int) -> list[int]:
    start = grow.start_res if grow.enabled else final_res
    return [2 ** i for i in range(int(math.log2(start)), int(math.log2(final_res)) + 1)]


def stage_at(nimg: int, grow: GrowConfig, final_res: int, batch_size: int, g_lr: float, d_lr: float) -> Stage:
    """The stage in force for an iteration starting after ``nimg`` images. Without growing,
    the full resolution at alpha 1 with the train section's batch and lrs."""
    res_list = resolutions(grow, final_res)
    fade, stable = round(grow.fade_kimg * 1000), round(grow.stable_kimg * 1000)  # whole images
    if not grow.enabled:
        res, alpha = final_res, 1.0
    else:
        # Stage k >= 1 spans [stable + (k-1)(fade+stable), stable + k(fade+stable)): fade first.
        t = nimg - stable
        if t < 0:
            k, alpha = 0, 1.0
        else:
            k = min(int(t // (fade + stable)) + 1, len(res_list) - 1)
            into = t - (k - 1) * (fade + stable)
            alpha = min(into / fade, 1.0)
        res = res_list[k]
    key = str(res)
    return Stage(res, float(alpha), grow.batch_size.get(key, batch_size),
                 grow.g_lr.get(key, g_lr), grow.d_lr.get(key, d_lr))


def checkpoint_stage(ckpt, cfg, final_res: int) -> Stage:
    """The stage a checkpoint (a checkpoint.schema.Checkpoint) last step ran at (what its nets
    were wrapped and set for); older checkpoints that did not record it get the schedule's stage
    for their nimg. ``cfg`` is the TrainConfig."""
    if ckpt.stage is not None:
        return Stage(**ckpt.stage)
    t = cfg.train
    return stage_at(ckpt.nimg, cfg.grow, final_res, t.batch_size, t.g_lr, t.d_lr)


def check_grow(grow: GrowConfig, train, final_res: int, G, D, family: str, world_size: int, source: str) -> None:
    """Refuse, naming the key, a schedule that cannot run on this data, model and world size:
    growing a family that cannot grow, a start the networks do not have, tables outside the
    schedule, a stage's batch that does not split over the ranks (``train`` is the LoopConfig)."""
    def fail(key: str, msg: str):
        raise ConfigError(f"config error in {source}: key '{key}': {msg}")

    if grow.enabled:
        if not (G.growable and D.growable):
            fail("grow.start_res", f"model family {family} does not support progressive growing; set it to null")
        if grow.start_res >= final_res:
            fail("grow.start_res", f"{grow.start_res} must be below the data resolution {final_res}")
        for name, net in (("generator", G), ("discriminator", D)):
            if grow.start_res not in net.stage_resolutions():
                fail("grow.start_res", f"the {family} {name} can start at {net.stage_resolutions()[0]} at the "
                                       f"lowest, not {grow.start_res}")
        for name in ("batch_size", "g_lr", "d_lr"):
            for k in getattr(grow, name):
                if not grow.start_res <= int(k) <= final_res:
                    fail(f"grow.{name}.{k}", f"resolution {k} is outside the schedule {grow.start_res}..{final_res}")
    for res in resolutions(grow, final_res):
        key = f"grow.batch_size.{res}" if str(res) in grow.batch_size else "train.batch_size"
        train.rounds(world_size, source, grow.batch_size.get(str(res), train.batch_size), key)
