"""The training loop. Read it top to bottom: build, then per iteration fetch data, run
phases, update EMA, and on tick boundaries log, draw samples and checkpoint.

Progress is counted in images (nimg), so batch size and world size can change without
changing the schedule. Every random draw in a step comes from the torch RNG or the data
stream's own per-epoch generator, both checkpointed, which is what makes resume exact for
in-memory data; a shard stream resumes with fresh randomness (see docs/data.md).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import json
import os
import random
import signal
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

from bigtrain.checkpoint import CheckpointManager, capture_rng, checkpoint_dir, restore_rng, write_atomic
from bigtrain.checkpoint.schema import Checkpoint
from bigtrain.checkpoint.state import DamagedCheckpoint
from bigtrain.config import ConfigError, build, dump_yaml, to_dict
from bigtrain.data import open_data
from bigtrain.distributed import DistEnv, build_strategy, print0
from bigtrain.distributed.device import to_device
from bigtrain.distributed.strategy.base import REBUILDS_NETS, STRIDED_WEIGHTS
from bigtrain.models.sampling import standing_stats
from bigtrain.losses import GANLoss
from bigtrain.metrics.training import TrainingMetrics
from bigtrain.models import get_family
from bigtrain.models.common.growing import active_parameters, area_downsample, fade_reals, set_stage
from bigtrain.models.common.layers import set_reduced_precision
from bigtrain.models.sampling import latents_from_seeds, one_hot
from bigtrain.ops.conv import set_double_backward
from bigtrain.ops.modconv import set_epilogue
from bigtrain.train.config import TrainConfig
from bigtrain.train.ema import ema_beta, update_ema
from bigtrain.train.init import load_into, read_start
from bigtrain.train.observe import Observer, TickStats, image_grid, peak_memory_gb
from bigtrain.train.phases import build_phases, lazy_ratio
from bigtrain.train.schedule import Stage, check_grow, checkpoint_stage, stage_at

# Config sections that fix the networks' shapes: a checkpoint must agree on these.
MODEL_KEYS = ("model", "generator", "discriminator")


class TrainingDiverged(RuntimeError):
    """Too many iterations in a row with a non-finite loss."""


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint. ``requeue``: some rank got
    SIGUSR2, the signal Slurm sends before a time limit (and submitit on preemption), which
    asks the job to put itself back in the queue."""

    def __init__(self, signum: int, checkpoint: str | None, requeue: bool = False):
        super().__init__(f"stopped by signal {signum}; checkpoint {checkpoint}")
        self.signum, self.checkpoint, self.requeue = signum, checkpoint, requeue


# Signals that stop training cleanly: Ctrl+C, a scheduler's kill, Slurm's time-limit warning.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
# Under Slurm, how long a run stopped by SIGTERM alone waits after its checkpoint for a SIGUSR2
# (a requeue request): submitit's preemption sends the two in separate scancel calls.
REQUEUE_GRACE_S = 2.0


@dataclasses.dataclass
class Progress:
    nimg: int = 0  # real images shown to D so far (global)
    step: int = 0  # iterations done
    tick: int = 0  # ticks done
    tick_start_nimg: int = 0  # nimg where the tick under way began (a resume mid-tick ends it where it would have)
    nonfinite_total: int = 0  # iterations skipped for a non-finite loss
    nonfinite_run: int = 0  # ... of them in a row, now

    @property
    def kimg(self) -> float:
        return self.nimg / 1000


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: str | None = None, config_source: str = "the config",
                 loaded: Checkpoint | None = None):
        """``resume``: a checkpoint to continue from; ``loaded``: that checkpoint already read (and
        checked) by the caller, so that it is not read twice."""
        self.cfg = cfg
        self.env = DistEnv.from_environ()
        self.strategy = build_strategy(cfg.distributed, self.env)
        self.strategy.setup()
        self.device = self.strategy.device
        if cfg.run.num_threads:
            torch.set_num_threads(cfg.run.num_threads)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.train.allow_tf32
        set_double_backward(cfg.train.conv_double_backward)
        set_epilogue(cfg.train.modconv_epilogue)
        # Same initial weights on every rank and at every world size.
        torch.manual_seed(cfg.run.seed)

        # Data.
        self.data = open_data(cfg.data, cfg.run.seed, self.env.rank, self.env.world_size,
                              pin_memory=self.device.type == "cuda", printer=print0)
        C, R = self.data.channels, self.data.resolution
        self.model_info = {"family": cfg.model, "resolution": R, "channels": C,
                           "c_dim": self.data.num_classes, "label_names": list(self.data.label_names)}

        # Networks, loss, phases, optimizers.
        family = get_family(cfg.model)
        try:  # shape checks that need the data's resolution and classes
            G = family.build_generator(cfg.generator, R, C, self.data.num_classes).to(self.device)
            D = family.build_discriminator(cfg.discriminator, R, C, self.data.num_classes,
                                           growing=cfg.grow.enabled).to(self.device)
        except ValueError as e:
            raise ConfigError(f"config error in {config_source}: {e}") from None
        if cfg.train.channels_last:  # 4-D weights now; activations follow them, reals in _reals
            G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        start = None
        if cfg.train.init_from and not resume:  # fine-tuning (a resume has all of it in its checkpoint)
            start = read_start(cfg.train.init_from, cfg, self.model_info, config_source)
            load_into(G, start.G, "generator", cfg.train.init_from)
            if start.D is not None:
                load_into(D, start.D, "discriminator", cfg.train.init_from)
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        if start is not None:
            load_into(self.G_ema, start.G_ema, "generator", cfg.train.init_from)
        self.started_from = start.record if start is not None else None
        if cfg.train.freeze_d and not resume and (start is None or start.D is None):
            # Frozen blocks at their random initialisation would only hold D back.
            raise ConfigError(f"config error in {config_source}: key 'train.freeze_d': {cfg.train.freeze_d} blocks "
                              f"of D frozen, but D starts from its initialisation: "
                              + ("set train.init_from to a file that holds a D (an NVlabs pickle or a bigtrain checkpoint)"
                                 if start is None else f"{cfg.train.init_from} holds no whole D (an export folder "
                                 f"holds G_ema only, a DeepSpeed checkpoint keeps D in shards)") + ", or set train.freeze_d=0")
        # FreezeD: D's highest-resolution blocks keep their starting weights (never in an optimizer).
        self.frozen = {id(p) for p in self._frozen_d_parameters(D, config_source)}
        check_grow(cfg.grow, cfg.train, R, G, D, cfg.model, self.env.world_size, config_source)
        self.stage = self._stage_at(0)
        if cfg.loss.augment and cfg.augment.kind != "none":
            raise ConfigError(f"config error in {config_source}: keys 'loss.augment' and 'augment.kind' are both "
                              f"set; 'loss.augment' is the older spelling of augment.kind: diffaugment with "
                              f"augment.policy: keep one")
        self.loss = GANLoss(cfg.loss, cfg.augment).to(self.device)
        self.augment_stats: dict[str, float] = {}
        if cfg.loss.pl_weight > 0 and not G.has_w:
            raise ConfigError(f"config error in {config_source}: key 'loss.pl_weight': path-length "
                              f"regularization needs a style-based generator; {cfg.model} has none; set it to 0")
        if cfg.loss.style_mixing_prob > 0 and not G.has_w:
            raise ConfigError(f"config error in {config_source}: key 'loss.style_mixing_prob': style mixing needs a "
                              f"style-based generator; {cfg.model} has none; set it to 0")
        if cfg.loss.ortho_weight > 0 and G.ortho_parameters() is None:
            raise ConfigError(f"config error in {config_source}: key 'loss.ortho_weight': orthogonal regularization "
                              f"is defined for BigGAN's generator; {cfg.model} has none; set it to 0")
        self.phases = build_phases(self.loss.reg_intervals(), d_repeat=cfg.train.num_d_steps)
        needs = self.loss.needs()
        if cfg.grow.enabled:
            needs[REBUILDS_NETS] = ["grow.start_res"]
        if cfg.train.channels_last:
            needs[STRIDED_WEIGHTS] = ["train.channels_last"]
        self.strategy.validate(needs, config_source)
        self.strategy.set_precision(cfg.train.precision, cfg.train.reduced_precision_res)
        self.batch_gpu, self.rounds = cfg.train.rounds(self.env.world_size, config_source, self.stage.batch_size)
        self.strategy.set_batch(self.batch_gpu, self.rounds)
        for net in (G, D, self.G_ema):
            set_stage(net, self.stage.resolution, self.stage.alpha)
        if cfg.train.reduced_precision_res is not None and self.strategy.amp_dtype is not None:
            for name, net in (("generator", G), ("discriminator", D)):
                if not set_reduced_precision(net, self.strategy.amp_dtype, cfg.train.reduced_precision_res, R):
                    # Otherwise the whole network would run in float32 without a word.
                    raise ConfigError(f"config error in {config_source}: key 'train.reduced_precision_res': "
                                      f"{cfg.model}'s {name} has no blocks that choose their own precision; set "
                                      f"it to null (autocast everywhere) or train.precision=fp32")
        self.fused_optimizer = self.strategy.skips_on_device
        self.wrapped = {
            "G": self.strategy.wrap("G", G, self._make_optimizer("G"), self._trained(G)),
            "D": self.strategy.wrap("D", D, self._make_optimizer("D"), self._trained(D)),
        }
        self._build_phase_nets()
        # Layers that track their weights across steps (spectral norm's power iteration) hear of each
        # step taken: from the host, or with the device's flag of whether it was taken.
        self.step_hooks = {k: [m.weights_changed for m in w.raw.modules() if hasattr(m, "weights_changed")]
                           for k, w in self.wrapped.items()}
        # Nets whose non-finite steps the GPU skips without a host sync.
        self.skip_on_device = {k: self.fused_optimizer and cfg.train.skip_nonfinite_on_device for k in self.wrapped}
        self._unsettled: list[tuple[float, list[str], list[tuple[str, torch.Tensor]]]] = []
        self.loss.reduce_mean = lambda t: self.strategy.all_reduce(t, "mean")
        self.progress = Progress()
        self.run_dir = cfg.run.dir
        self.ckpt = CheckpointManager(checkpoint_dir(self.run_dir), cfg.checkpoint.keep, printer=print0)
        # Conditional models: one row per class (grid_size // classes seeds each).
        nc = self.data.num_classes
        per_class = max(1, cfg.log.grid_size // nc) if nc else None
        n_grid = per_class * nc if nc else cfg.log.grid_size
        self.grid_w = per_class
        self.grid_z = latents_from_seeds(list(range(n_grid)), G.z_dim, self.device)
        self.grid_c = one_hot(torch.arange(n_grid) // per_class if nc else None, nc, n_grid, self.device)
        self._signals: set[int] = set()  # stop signals received, not yet acted on
        self._io_error: OSError | None = None  # a failed write of logs or samples (rank 0), see _log
        self.metrics = TrainingMetrics(cfg.metrics, self.data, self.strategy, self.device, self.run_dir, print0)
        # Rank-local randomness (augmentation, noise inputs, style mixing) differs per rank. Python's
        # and numpy's generators are seeded alike: checkpoints save and restore them, so a library
        # that draws from them is exact on resume and repeatable from the start.
        rank_seed = cfg.run.seed * 1_000_003 + self.env.rank
        torch.manual_seed(rank_seed)
        random.seed(rank_seed)
        np.random.seed(rank_seed % 2 ** 32)
        if resume:
            self.load(resume, config_source, loaded)

    def _trained(self, net: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The parameters the optimizer of ``net`` trains: those in use at the stage, less FreezeD's."""
        return [p for p in active_parameters(net) if id(p) not in self.frozen]

    def _frozen_d_parameters(self, D: torch.nn.Module, source: str) -> list[torch.nn.Parameter]:
        k = self.cfg.train.freeze_d
        if not k:
            return []
        blocks = D.resolution_blocks()
        if not blocks:
            raise ConfigError(f"config error in {source}: key 'train.freeze_d': {self.cfg.model}'s discriminator "
                              f"has no resolution blocks to freeze; set it to 0")
        if k > len(blocks):
            raise ConfigError(f"config error in {source}: key 'train.freeze_d': {k} blocks, but D has "
                              f"{len(blocks)} ({', '.join(f'{r}x{r}' for r, _ in blocks)}) besides its output layers")
        return [p for _, block in blocks[:k] for p in block.parameters()]

    def _build_phase_nets(self) -> None:
        # Per phase: the trained net through its strategy wrapper, the other one plain (frozen,
        # or a sampler under no_grad), so a DDP/DeepSpeed wrapper only ever sees its own backward.
        self.phase_nets = {
            net: types.SimpleNamespace(**{k: (w.module if k == net else w.raw) for k, w in self.wrapped.items()},
                                       G_raw=self.wrapped["G"].raw)
            for net in self.wrapped}

    # ---------------------------------------------------------------- progressive growing
    def _stage_at(self, nimg: int) -> Stage:
        t = self.cfg.train
        return stage_at(nimg, self.cfg.grow, self.model_info["resolution"], t.batch_size, t.g_lr, t.d_lr)

    def _enter_stage(self, stage: Stage) -> None:
        """Set resolution and alpha on G, D and G_ema; when the parameters in use change, rewrap
        the nets for them (optimizer state carries over) and apply the stage's batch and lrs."""
        previous, self.stage = self.stage, stage
        for w in self.wrapped.values():
            set_stage(w.raw, stage.resolution, stage.alpha)
        set_stage(self.G_ema, stage.resolution, stage.alpha)
        if stage.key != previous.key or stage.batch_size != previous.batch_size:
            self.batch_gpu, self.rounds = self.cfg.train.rounds(self.env.world_size, batch_size=stage.batch_size)
            self.strategy.set_batch(self.batch_gpu, self.rounds)
            self.wrapped = {k: self.strategy.rewrap(w, self._trained(w.raw)) for k, w in self.wrapped.items()}
            self._build_phase_nets()
            print0(f"stage: {stage.resolution}x{stage.resolution}"
                   f"{' fading in' if stage.fading else ''}, batch {stage.batch_size} from kimg {self.progress.kimg:g}")
        if (stage.g_lr, stage.d_lr) != (previous.g_lr, previous.d_lr):
            for net, w in self.wrapped.items():
                for group in w.optimizer.param_groups:
                    group.update(self._hparams(net))

    def _hparams(self, net: str) -> dict:
        """Adam settings for ``net`` at the current stage, with the lazy-regularization rescale."""
        t = self.cfg.train
        ratio = lazy_ratio(self.phases, net)
        lr = self.stage.g_lr if net == "G" else self.stage.d_lr
        return {"lr": lr * ratio, "betas": (t.betas[0] ** ratio, t.betas[1] ** ratio), "eps": t.eps,
                # One fused kernel for the whole update on a GPU, which can also skip a step there.
                "fused": self.fused_optimizer or None}  # None, not False: torch keeps its foreach default

    def _make_optimizer(self, net: str):
        return lambda params: torch.optim.Adam(params, **self._hparams(net))

    # ---------------------------------------------------------------- one iteration
    def _reals(self, n: int) -> dict[str, torch.Tensor]:
        img, labels = self.data.next(n)
        # Normalisation and (growing) area downsampling happen on the device: uint8 travels.
        # train.channels_last: the layout changes in the same pass as the dtype; the rest keeps it.
        layout = torch.channels_last if self.cfg.train.channels_last else torch.preserve_format
        img = area_downsample(self._to_device(img).to(torch.float32, memory_format=layout) / 127.5 - 1,
                              self.stage.resolution)
        if self.stage.fading:
            img = fade_reals(img, self.stage.alpha, self.wrapped["G"].raw.upsample)
        return {"real_img": img, "real_c": one_hot(self._to_device(labels), self.data.num_classes, n, self.device)}

    def _latents(self, n: int, salt: int) -> dict:
        """z, labels drawn with the dataset's class balance (conditional models) and a seed per
        sample. Sample j of this rank is sample ``j * world + rank`` of the global batch, and its
        draws come from a seed of (run seed, step, salt, global index), so the global batch is
        the same at any world size (what makes 2 ranks x 4 equal 1 rank x 8)."""
        world, rank = self.env.world_size, self.env.rank
        base = ((self.cfg.run.seed * 1_000_003 + self.progress.step) * 1_009 + salt) * 1_000_003
        seeds = [(base + j * world + rank) % (2 ** 62) for j in range(n)]
        g = torch.Generator()
        z = torch.stack([torch.randn(self.G_ema.z_dim, generator=g.manual_seed(s)) for s in seeds])
        c_dim = self.data.num_classes
        labels = None
        if c_dim:
            probs = self.data.class_probs()
            labels = torch.cat([torch.multinomial(probs, 1, generator=g.manual_seed(s + 2)) for s in seeds])
        return {"gen_z": self._to_device(z), "gen_c": one_hot(self._to_device(labels), c_dim, n, self.device),
                "sample_seeds": seeds}

    def _to_device(self, t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else to_device(t, self.device)  # queued, no host sync per phase

    def train_step(self, stats: TickStats) -> None:
        p = self.progress
        self._enter_stage(self._stage_at(p.nimg))
        bg, rounds = self.batch_gpu, self.rounds
        # Fetch data: reals are shared by the phases of an iteration, latents are fresh per phase.
        reals = self._reals(bg * rounds)
        # Run phases.
        skipped, device_flags = [], []
        for phase_idx, phase in enumerate(self.phases):
            if p.step % phase.interval != 0:
                continue
            w = self.wrapped[phase.net]
            for name, other in self.wrapped.items():
                other.requires_grad_(name == phase.net)
            for rep in range(phase.repeat):
                if rep > 0:
                    reals = self._reals(bg * rounds)
                batch = {**reals, **self._latents(bg * rounds, salt=phase_idx * 64 + rep)}
                finite = torch.ones([], device=self.device)
                for r in range(rounds):
                    chunk = {k: v[r * bg:(r + 1) * bg] for k, v in batch.items()}
                    sync = contextlib.nullcontext() if r == rounds - 1 else self.strategy.no_sync(w)
                    with sync:
                        with self.strategy.autocast():
                            out = self.loss.compute(phase, self.phase_nets[phase.net], chunk, p)
                        total = out.total.float()
                        finite = finite * torch.isfinite(total)
                        self.strategy.backward(total / rounds, w)
                    stats.add(out.terms)
                ok = self.strategy.all_reduce(finite, "min")
                if self.skip_on_device[phase.net]:
                    # The fused optimizer skips a non-finite step on the GPU; counted later, in order.
                    self.strategy.step(w, ok)
                    for notify in self.step_hooks[phase.net]:
                        notify(ok)
                    device_flags.append((phase.name, ok))
                # Else .item() syncs with the device: the price of keeping NaNs out of the weights.
                elif ok.item() == 1:
                    self.strategy.step(w)
                    for notify in self.step_hooks[phase.net]:
                        notify()
                else:
                    self.strategy.zero_grad(w)
                    skipped.append(phase.name)
        for other in self.wrapped.values():
            other.requires_grad_(False)
        # Adjust ADA's p (every rank alike: the signs are summed over ranks).
        ada = self.loss.ada
        if ada is not None and ada.due(p.step):
            pipe = self.loss.augment_pipe
            self.augment_stats = ada.adjust(pipe.p, self.stage.batch_size * self.cfg.train.num_d_steps,
                                            all_reduce=lambda t: t.copy_(self.strategy.all_reduce(t, "sum")))
            pipe.note_p(self.augment_stats["augment_p"])  # what adjust wrote: the pipe need not read it back
        # Update EMA.
        t = self.cfg.train
        batch = self.stage.batch_size * t.num_d_steps
        beta = ema_beta(batch, p.nimg, t.ema_halflife_kimg, t.ema_rampup) if p.nimg >= t.ema_start_kimg * 1000 else 0.0
        with self.strategy.gathered(self.wrapped["G"]):
            update_ema(self.G_ema, self.wrapped["G"].raw, beta)
        p.nimg += batch
        p.step += 1
        self._unsettled.append((p.kimg, skipped, device_flags))
        if len(self._unsettled) >= 1024 or not any(flags for _, _, flags in self._unsettled):
            self.settle_nonfinite()

    def _augment_values(self) -> dict[str, float]:
        """ADA's p and the r_t of its last adjustment, for the tick's scalars (fixed p: p alone)."""
        pipe = self.loss.augment_pipe
        if pipe is None:
            return {}
        out = {"Progress/augment_p": float(pipe.p)}
        if "augment_rt" in self.augment_stats:
            out["Progress/augment_rt"] = self.augment_stats["augment_rt"]
        return out

    def settle_nonfinite(self) -> None:
        """Count the iterations that skipped a step, in order: at once where the host checked, at
        the next tick (one sync for all) where the GPU skipped them."""
        flags = [ok for _, _, dev in self._unsettled for _, ok in dev]
        values = iter(torch.stack(flags).tolist() if flags else [])
        entries, self._unsettled = self._unsettled, []
        diverged = None
        for kimg, skipped, dev in entries:  # all of them counted, then a divergence raised
            try:
                self._count_nonfinite(skipped + [name for name, _ in dev if next(values) < 1], kimg)
            except TrainingDiverged as e:
                diverged = diverged or e
        if diverged is not None:
            raise diverged

    def _count_nonfinite(self, skipped: list[str], kimg: float) -> None:
        p = self.progress
        if not skipped:
            p.nonfinite_run = 0
            return
        p.nonfinite_total += 1
        p.nonfinite_run += 1
        if p.nonfinite_run <= 3 or p.nonfinite_run % 10 == 0:
            print0(f"warning: non-finite loss at kimg {kimg:.1f} in {', '.join(skipped)}; step skipped "
                   f"({p.nonfinite_run} in a row, {p.nonfinite_total} in total)")
        if p.nonfinite_run >= self.cfg.train.max_nonfinite_steps:
            raise TrainingDiverged(
                f"training diverged: {p.nonfinite_run} iterations in a row had a non-finite loss "
                f"(train.max_nonfinite_steps={self.cfg.train.max_nonfinite_steps}); the last good checkpoint "
                f"is {self.ckpt.latest() or '(none written yet)'}")

    # ---------------------------------------------------------------- the loop
    def run(self) -> str | None:
        """Train to total_kimg; returns the final checkpoint path (rank 0). A stop signal from here
        on (SIGINT, SIGTERM, SIGUSR2), even one during the run's first writes and sample grid,
        ends the run after the next step with a checkpoint."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> str | None:
        cfg, p = self.cfg, self.progress
        total_nimg = int(cfg.train.total_kimg * 1000)
        tick_nimg = int(cfg.log.tick_kimg * 1000)
        is_main = self.strategy.is_main
        if is_main:
            os.makedirs(self.run_dir, exist_ok=True)
            dump_yaml(cfg, os.path.join(self.run_dir, "config.yaml"))
            if self.started_from is not None:  # where a fine-tuning run started (a resume keeps the file)
                write_atomic(os.path.join(self.run_dir, "init_from.json"),
                             lambda f: f.write((json.dumps(self.started_from, indent=2) + "\n").encode()))
        if self.started_from is not None:
            r = self.started_from
            print0(f"starting from {r['path']} ({r['kind']}: {', '.join(r['nets'])}); optimizers fresh, kimg 0"
                   + (f"; D's {cfg.train.freeze_d} highest-resolution blocks frozen" if cfg.train.freeze_d else ""))
        obs = Observer(self.run_dir, is_main, total_nimg, p.nimg, cfg.log.progress_bar)
        print0(f"training {cfg.model} at {self.model_info['resolution']}px: {total_nimg} images, "
               f"batch {self.stage.batch_size} = {self.env.world_size} rank(s) x {self.batch_gpu} x {self.rounds} "
               f"round(s), from kimg {p.kimg:.3f}; run dir {self.run_dir}")
        if p.nimg == 0:
            real = self.data.preview(cfg.log.grid_size).float() / 127.5 - 1
            obs.image("Samples/reals", image_grid(real), 0, os.path.join(self.run_dir, "reals.png"))
            self._samples(obs)
        stats = TickStats()
        tick_start, tick_start_nimg, t0 = time.time(), p.tick_start_nimg, time.time()
        timed_from_nimg = p.nimg  # a tick's rates count this process's images only (not those before a resume)
        last_ckpt = None
        try:
            while p.nimg < total_nimg:
                self.train_step(stats)
                obs.advance(p.nimg)
                done = p.nimg >= total_nimg
                # Every rank stops after the same step, whichever ranks the signal reached.
                flags = torch.tensor([float(max(self._signals, default=0)), float(signal.SIGUSR2 in self._signals)])
                signum, requeue = (int(v) for v in self.strategy.all_reduce(flags, "max").tolist())
                if signum and not done:  # on the last step the run simply finishes
                    path = self.save()
                    if signum == signal.SIGTERM and not requeue and os.environ.get("SLURM_JOB_ID"):
                        requeue = self._late_requeue_request()
                    obs.line(f"signal {signum}: checkpoint written to {path}; exiting")
                    raise Interrupted(signum, path, requeue=bool(requeue))
                if not done and p.nimg < tick_start_nimg + tick_nimg:
                    continue
                # Maintenance tick.
                self.settle_nonfinite()
                p.tick += 1
                p.tick_start_nimg = p.nimg  # the next tick starts here (checkpoints below record it)
                now = time.time()
                sec = now - tick_start
                kimg_done = (p.nimg - timed_from_nimg) / 1000
                values = {
                    "Progress/kimg": p.kimg, "Progress/tick": p.tick,
                    "Progress/nonfinite_skipped": p.nonfinite_total,
                    "Timing/sec_per_tick": sec, "Timing/sec_per_kimg": sec / max(kimg_done, 1e-9),
                    "Timing/img_per_sec": kimg_done * 1000 / max(sec, 1e-9), "Timing/total_sec": now - t0,
                    "Resources/peak_mem_gb": peak_memory_gb(self.device),
                    "Progress/resolution": self.stage.resolution, "Progress/alpha": self.stage.alpha,
                    "Progress/batch_size": self.stage.batch_size,
                    **self._augment_values(),
                    "LR/G": self.wrapped["G"].optimizer.param_groups[0]["lr"],
                    "LR/D": self.wrapped["D"].optimizer.param_groups[0]["lr"],
                    **{k: self.strategy.all_reduce(torch.tensor(float(v)), "sum").item()
                       for k, v in self.data.stats().items()},
                    **{k: self.strategy.all_reduce(torch.tensor(v), "mean").item() for k, v in stats.means().items()},
                }
                self._log(obs.scalars, values, p.kimg, p.nimg)
                eta = (total_nimg - p.nimg) / max(values["Timing/img_per_sec"], 1e-9)
                grow = f"res {self.stage.resolution:<4d}alpha {self.stage.alpha:<6.3f}" if cfg.grow.enabled else ""
                self._log(obs.line, f"tick {p.tick:<4d} kimg {p.kimg:<9.3f} {grow}sec/kimg "
                          f"{values['Timing/sec_per_kimg']:<7.2f} img/s {values['Timing/img_per_sec']:<7.1f} "
                          f"G {values.get('Loss/G/main', float('nan')):<7.3f}"
                          f"D {values.get('Loss/D/main', float('nan')):<7.3f} ETA {eta / 60:.1f} min")
                if cfg.log.image_ticks and (p.tick % cfg.log.image_ticks == 0 or done):
                    self._log(self._samples, obs)
                if self.metrics.due(tick_start_nimg, p.nimg, done):
                    self._evaluate(obs, t0)
                # A write of logs or samples failed on rank 0 (disk full, a folder gone): every rank
                # writes a checkpoint now, keeping the work since the last one if the disk allows
                # it, and the run stops naming the failure and the newest intact checkpoint.
                if self.strategy.all_reduce(torch.tensor(float(self._io_error is not None)), "max").item():
                    if p.nonfinite_run == 0:  # (as below: a streak's state never replaces a good checkpoint)
                        self.save()
                    raise self._io_error or OSError(errno.EIO, "rank 0 could not write its logs (see its message)")
                if (p.tick % cfg.checkpoint.interval_ticks == 0 or done) and p.nonfinite_run == 0:
                    # Never during a non-finite streak: it would rotate the last good checkpoint out.
                    last_ckpt = self.save()
                tick_start, tick_start_nimg = time.time(), p.nimg
                timed_from_nimg = p.nimg
        finally:
            obs.close()
            self.data.close()
        return last_ckpt

    def _late_requeue_request(self) -> int:
        """After a SIGTERM's checkpoint under Slurm: did a SIGUSR2 follow (on any rank) within
        REQUEUE_GRACE_S? On a loaded node the second scancel of submitit's preemption lands
        after the step that saw the first (seen in CI: the job then ended FAILED, not requeued)."""
        deadline = time.time() + REQUEUE_GRACE_S
        while signal.SIGUSR2 not in self._signals and time.time() < deadline:
            time.sleep(0.05)
        return int(self.strategy.all_reduce(torch.tensor(float(signal.SIGUSR2 in self._signals)), "max").item())

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and signum in self._signals:
            raise KeyboardInterrupt  # Ctrl+C twice: stop now
        # A repeated SIGTERM/SIGUSR2 changes nothing: Slurm and torchrun may both deliver one.
        if not self._signals:
            print0(f"received signal {signum}: finishing this step, then writing a checkpoint (Ctrl+C twice aborts)")
        self._signals.add(signum)

    def _evaluate(self, obs: Observer, t0: float) -> None:
        """Training-time metrics of G_ema (every rank takes a share), logged at this nimg; a new
        best value of metrics.best writes checkpoints/best.pt."""
        p, m = self.progress, self.metrics
        if self.cfg.log.standing_stats:  # on every rank, so every rank evaluates the same G_ema
            standing_stats(self.G_ema, self.cfg.log.standing_stats, self.batch_gpu, self.device)
        values, sec = m.evaluate(self.G_ema)
        share = m.seconds / max(time.time() - t0, 1e-9)
        self._log(obs.scalars, {**{f"Metrics/{k}": v for k, v in values.items()}, "Timing/metrics_sec": sec,
                                "Timing/metrics_share": share}, p.kimg, p.nimg)
        line = (f"metrics at kimg {p.kimg:.3f}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items())
                + f" ({sec:.0f} s; evaluation is {100 * share:.0f}% of this run's time so far)")
        if self.strategy.is_main and m.improves(values):
            self._log(self.save_best, values)
            line += f"; new best {m.best.name}: {m.best_path}"
        self._log(obs.line, line)

    def _log(self, write, *args) -> None:
        """``write(*args)``, a write of logs, samples or best.pt. An I/O error there does not end
        the run on the spot (rank 0 alone would leave the others waiting): it is kept, and the tick
        ends with a checkpoint and a stop (run)."""
        if self._io_error is not None:
            return
        try:
            write(*args)
        except OSError as e:
            if e.errno is None:
                raise
            self._io_error = e

    def save_best(self, values: dict) -> str:
        """checkpoints/best.pt: G_ema with its config and scores, for generate, eval and export
        (it holds no optimizer or D state, so it cannot be resumed from). Rank 0 only."""
        m = self.metrics
        Checkpoint(kind="best", config=to_dict(self.cfg), model_info=self.model_info,
                   G_ema=self.G_ema.state_dict(), progress=dataclasses.asdict(self.progress),
                   stage=dataclasses.asdict(self.stage), best={"metric": m.best.name, "value": values[m.best.name]},
                   metrics=values).write(m.best_path)
        m.write_summary(values, self.progress.kimg)
        return m.best_path

    @torch.no_grad()
    def _samples(self, obs: Observer) -> None:
        if not self.strategy.is_main:
            return
        if self.cfg.log.standing_stats:
            standing_stats(self.G_ema, self.cfg.log.standing_stats, self.batch_gpu, self.device)
        imgs = [self.G_ema(z, c, noise_mode="const")
                for z, c in zip(self.grid_z.split(self.batch_gpu), self.grid_c.split(self.batch_gpu))]
        imgs = torch.cat(imgs)
        # Grids keep the full size while growing (nearest upsampling), so a run reads as one strip.
        grid = image_grid(F.interpolate(imgs, size=self.model_info["resolution"], mode="nearest"), self.grid_w)
        png = os.path.join(self.run_dir, "samples", f"fakes{self.progress.nimg // 1000:06d}.png")
        obs.image("Samples/fakes", grid, self.progress.nimg, png)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self, shard_folder: str | None = None) -> Checkpoint:
        return Checkpoint(
            kind="train", config=to_dict(self.cfg), model_info=self.model_info, G_ema=self.G_ema.state_dict(),
            progress=dataclasses.asdict(self.progress),
            stage=dataclasses.asdict(self.stage),  # of the last step: what the nets are wrapped for
            strategy={k: self.strategy.state_dict(w, shard_folder) for k, w in self.wrapped.items()},
            loss=self._loss_state(),
            # Every rank's generators: augmentation, noise and style mixing draw per rank.
            rng=self.strategy.all_gather_object(capture_rng()),
            data=self.data.state_dict())

    def _loss_state(self) -> dict:
        state = self.loss.state_dict()
        if self.loss.ada is not None and self.env.world_size > 1:
            # Each rank holds its own sign sums since ADA's last adjustment; the checkpoint holds their
            # total, which rank 0 takes on resume while the others start from zero (load), so the
            # next adjustment sums to what it would have without the stop.
            state["ada.acc"] = self.strategy.all_reduce(self.loss.ada.acc.clone(), "sum")
        return state

    def save(self) -> str | None:
        self.settle_nonfinite()  # the counters are part of the state
        # On every rank: a sharding strategy writes its shards into the .ds folder here.
        ckpt = self.state_dict(self.ckpt.shard_folder(self.progress.nimg))
        self.strategy.barrier()
        path, error = None, None
        if self.strategy.is_main:
            try:
                path = self.ckpt.save(ckpt.to_state(), self.progress.nimg)
            except OSError as e:  # disk full, quota: every rank stops (the others would wait forever)
                if e.errno is None:
                    raise
                error = e
        if self.strategy.all_reduce(torch.tensor(float(error is not None)), "max").item():  # and a barrier
            raise error or OSError(errno.EIO, "rank 0 could not write the checkpoint (see its message)")
        return path

    def load(self, path: str, config_source: str, ckpt: Checkpoint | None = None) -> None:
        ckpt = ckpt or Checkpoint.read(path, kind="train")
        check_model_config(ckpt, to_dict(self.cfg), self.model_info, path, config_source)
        # The stage (and so the wrapped parameter set) the checkpoint's last step ran at, before
        # loading: the next step moves on to the stage of nimg, as the uninterrupted run would.
        # Checkpoints before tick_start_nimg existed resume with a tick starting where they stopped.
        self.progress = Progress(**{"tick_start_nimg": ckpt.nimg, **ckpt.progress})
        self._enter_stage(checkpoint_stage(ckpt, self.cfg, self.model_info["resolution"]))
        try:
            self.G_ema.load_state_dict(ckpt.G_ema)
            for k, w in self.wrapped.items():
                self.strategy.load_state_dict(w, ckpt.strategy[k], os.path.splitext(path)[0] + ".ds")
        except (RuntimeError, KeyError, TypeError, AttributeError, IndexError) as e:
            raise ValueError(f"checkpoint {path} does not fit the model built from {config_source}: "
                             f"{str(e).splitlines()[0]}") from None
        for net, w in self.wrapped.items():
            # The optimizer state carries the old run's lr/betas; the config being resumed wins.
            for group in w.optimizer.param_groups:
                group.update(self._hparams(net))
                for p in group["params"]:
                    st = w.optimizer.state.get(p, {})
                    for k, v in st.items():
                        # Adam's moments in the parameter's memory layout: load_state_dict keeps the
                        # checkpoint's, which differs after a change of train.channels_last, and fused
                        # Adam on a GPU refuses moments laid out unlike their parameter.
                        if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                            st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)
                    if group["fused"] and isinstance(st.get("step"), torch.Tensor):
                        # A checkpoint from a non-fused optimizer (older bigtrain, a CPU run) keeps its
                        # step counts on the host; fused Adam reads them on the parameters' device.
                        st["step"] = st["step"].to(p.device, torch.float32)
        # The states their owners read (the schema checks only their outer type): one that does not
        # load is an error naming the checkpoint, not a traceback.
        try:
            self.loss.load_state_dict(ckpt.loss)
            if self.loss.ada is not None and self.env.rank:
                self.loss.ada.acc.zero_()  # rank 0 carries the ranks' total (_loss_state)
            rng = ckpt.rng if isinstance(ckpt.rng, list) else [ckpt.rng]  # older: rank 0's only
            if len(rng) == self.env.world_size:
                restore_rng(rng[self.env.rank])  # exact: each rank carries on with its own stream
            else:
                # Another world size: rank 0's state, and fresh per-rank streams so ranks do not repeat
                # each other's augmentation and noise.
                restore_rng(rng[0])
                if self.env.rank:
                    torch.manual_seed(self.cfg.run.seed * 1_000_003 + self.env.rank + 7919 * self.progress.step)
            self.data.load_state_dict(ckpt.data)
        except (KeyError, TypeError, IndexError, AttributeError, RuntimeError) as e:
            raise DamagedCheckpoint(f"checkpoint {path}: its loss, RNG or data state does not load "
                                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        print0(f"resumed from {path} at kimg {self.progress.kimg:.3f}")


def check_model_config(ckpt: Checkpoint, cfg_dict: dict, model_info: dict, path: str, source: str) -> None:
    """A resumed checkpoint must describe the same networks; name every key that differs."""
    diffs = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        elif a != b:
            diffs.append(f"{prefix}: checkpoint has {a!r}, {source} has {b!r}")

    # Built from the schema, so a key added since the checkpoint was written (a new setting) reads
    # as its default there rather than as a difference.
    try:
        theirs = to_dict(build(TrainConfig, ckpt.config, sources=f"the config stored in {path}"))
    except ConfigError:
        theirs = ckpt.config
    for key in MODEL_KEYS:
        walk(theirs.get(key), cfg_dict.get(key), key)
    for k in ("resolution", "channels", "c_dim"):
        if ckpt.model_info.get(k) != model_info.get(k):
            diffs.append(f"data {k}: checkpoint has {ckpt.model_info.get(k)!r}, the dataset gives {model_info.get(k)!r}")
    if diffs:
        raise ConfigError(f"checkpoint {path} was trained with a different model than {source} describes:\n  "
                          + "\n  ".join(diffs))
