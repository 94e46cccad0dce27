"""DeepSpeed ZeRO: one engine per network (G, D), stage 0/1/2/3.

- The loop's accumulation rounds map onto DeepSpeed's unmanaged gradient accumulation
  (``managed_gradient_accumulation: false``): backward() accumulates, step() is the
  boundary that reduces and applies. The loss arrives already divided by the rounds.
- Forward passes call the modules themselves (see wrap); backward and step go through the
  trained net's engine. The other net is frozen (``requires_grad_(False)``; DeepSpeed gives
  silently wrong results at ZeRO-1 or asserts at ZeRO-2/3 otherwise) or runs under no_grad.
  ZeRO-3's hooks live on the module, so these calls still gather partitioned parameters.
- ``gradient_clipping`` is set to 0: DeepSpeed's default clips, which changed results.
- Optimizers are the torch Adam the trainer builds (no fused CPU Adam to JIT-build).
- bf16: torch autocast over an fp32 model (master weights and G_ema stay exact); fp16:
  DeepSpeed's fp16 mode with its dynamic loss scaling, plus autocast.
- Checkpoints: each engine writes its (possibly partitioned) state with save_checkpoint
  into ``ckpt-<nimg>.ds/<net>/`` beside our ``ckpt-<nimg>.pt``, which is written last and
  is what marks the checkpoint complete. Resuming needs the same world size.
- Loading those files never runs code from them: each engine's checkpoint engine is wrapped so
  that its loads use ``torch.load(weights_only=True)`` with an allow-list of the four plain
  DeepSpeed classes its files hold (``_SafeLoads``), instead of DeepSpeed's
  ``weights_only=False``; the folder is the one beside the ``.pt`` being resumed, never a path
  read from it; and DeepSpeed's universal-checkpoint loader (which loads unsafely on its own
  paths) is refused in the config.

User settings pass through from ``distributed.deepspeed_config`` (merged over ours).
"""
from __future__ import annotations

import contextlib
import os

import torch

from .base import REBUILDS_NETS, SECOND_ORDER, STRIDED_WEIGHTS, WEIGHTS_OUTSIDE_FORWARD, Wrapped, _nbytes
from .group import ProcessGroupStrategy, init_process_group, sync_batchnorm


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _ds_allowed_globals() -> list:
    """The classes DeepSpeed 0.19's ZeRO 0-3 checkpoint files hold besides tensors and containers
    (found by listing the GLOBAL opcodes of each stage's files, fp32 and bf16). Plain data
    classes and an enum: weights_only builds them without calling their methods."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


class _SafeLoads:
    """DeepSpeed's checkpoint engine with ``load`` replaced by a weights-only load: a file of a
    ``.ds`` folder holding anything else (a pickled callable, code) is refused, nothing run."""

    def __init__(self, inner):
        self._inner = inner

    def load(self, path: str, map_location=None):
        try:
            with torch.serialization.safe_globals(_ds_allowed_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:
            from bigtrain.checkpoint.state import DamagedCheckpoint, load_error
            raise DamagedCheckpoint(f"DeepSpeed file {path} cannot be loaded safely (it holds something other "
                                    f"than tensors and DeepSpeed's plain state, or is corrupt): {load_error(e)}") from None

    def __getattr__(self, name):
        return getattr(self._inner, name)


class DeepSpeedStrategy(ProcessGroupStrategy):
    """The process group and its collectives as every multi-process strategy has them; networks,
    gradients and checkpoints through DeepSpeed engines."""
    name = "deepspeed"

    def __init__(self, env, device, zero_stage: int = 1, user_config: dict | None = None):
        super().__init__(env, device)
        self.zero_stage, self.user_config = zero_stage, dict(user_config or {})
        self.batch_gpu, self.rounds = 1, 1
        self.engines: dict = {}

    def setup(self) -> None:
        import deepspeed
        init_process_group(self.env, self.device)  # gloo on CPU, NCCL on GPU; exports RANK etc.
        if self.device.type == "cpu":
            # On CPU, DeepSpeed's communication backend compiles its shared-memory all-reduce op (C++,
            # about 90 s on 2 cores, on each fresh machine) for its inference all-reduce alone: training
            # reduces through torch.distributed, so bigtrain marks the op unavailable and nothing builds.
            import deepspeed.ops
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo")

    def validate(self, needs: dict[str, list[str]], source: str) -> None:
        from bigtrain.config import ConfigError
        if needs.get(STRIDED_WEIGHTS):
            raise ConfigError(
                f"config error in {source}: key '{needs[STRIDED_WEIGHTS][0]}': DeepSpeed flattens the weights into "
                "contiguous buffers and fails on channels_last ones; use it with distributed.strategy single or ddp")
        if self.zero_stage == 3 and needs.get(REBUILDS_NETS):
            raise ConfigError(
                f"config error in {source}: key 'distributed.zero_stage': progressive growing rebuilds the engines "
                "at each stage, which ZeRO-3's parameter partitioning (hooks on the module) does not survive; use "
                "zero_stage 1 or 2, or set grow.start_res to null")
        if self.zero_stage == 3 and needs.get(WEIGHTS_OUTSIDE_FORWARD):
            keys = needs[WEIGHTS_OUTSIDE_FORWARD]
            raise ConfigError(
                f"config error in {source}: key 'distributed.zero_stage': {', '.join(keys)} (orthogonal "
                "regularization) reads G's weights outside its forward pass, where ZeRO-3 keeps them "
                f"partitioned; use zero_stage 1 or 2, or set {' and '.join(keys)} to 0")
        if (self.user_config.get("checkpoint") or {}).get("load_universal"):
            raise ConfigError(
                f"config error in {source}: key 'distributed.deepspeed_config.checkpoint.load_universal': bigtrain's "
                "DeepSpeed checkpoints are not universal checkpoints, and DeepSpeed's universal loader unpickles "
                "files with code allowed; remove the key")
        if self.zero_stage == 3 and needs.get(SECOND_ORDER):
            raise ConfigError(
                f"config error in {source}: key 'distributed.zero_stage': ZeRO-3 releases parameters between "
                f"forward and backward, so the second-order gradients of {', '.join(needs[SECOND_ORDER])} "
                "fail under it; use zero_stage 1 or 2, or set them to 0")

    def set_batch(self, batch_gpu: int, rounds: int) -> None:
        self.batch_gpu, self.rounds = batch_gpu, rounds

    def ds_config(self) -> dict:
        cfg = {
            "train_micro_batch_size_per_gpu": self.batch_gpu,
            "gradient_accumulation_steps": self.rounds,
            "train_batch_size": self.batch_gpu * self.rounds * self.world_size,
            "managed_gradient_accumulation": False,
            "zero_optimization": {"stage": self.zero_stage, "overlap_comm": False},
            "zero_allow_untested_optimizer": True,
            "gradient_clipping": 0.0,  # the default would clip; GAN recipes here do not
            "fp16": {"enabled": self.precision == "fp16", "initial_scale_power": 16},
            "steps_per_print": 2 ** 62,
            "wall_clock_breakdown": False,
        }
        return deep_merge(cfg, self.user_config)

    def wrap(self, name, net, make_optimizer, params=None):
        import deepspeed
        net.to(self.device)
        sync_batchnorm(net)
        params = list(net.parameters() if params is None else params)
        # ZeRO flattens and partitions exactly the parameters it is given that require grad.
        w = Wrapped(name=name, module=net, raw=net, optimizer=None, params=params, make_optimizer=make_optimizer)
        w.requires_grad_(True)
        engine, ds_optimizer, _, _ = deepspeed.initialize(model=net, optimizer=make_optimizer(params),
                                                          config=self.ds_config())
        w.requires_grad_(False)
        engine.checkpoint_engine = _SafeLoads(engine.checkpoint_engine)
        self.engines[name] = engine
        # Forward passes call the module itself, never engine.forward: the engine hooks its
        # outputs for torch-style backward, and the autograd.grad calls of R1 and path length
        # on those outputs would then run its gradient reduction mid-phase. Backward and step
        # go through the engine; ZeRO-3's parameter gathering lives on the module's own hooks.
        w.module, w.optimizer = engine.module, ds_optimizer
        return w

    def rewrap(self, w, params):
        """A new engine over ``params``. ZeRO's flat partitions are built for one parameter set,
        so the engine is rebuilt and its Adam state starts afresh at each change of the set (as
        ProGAN's own code reset its optimizer at every resolution); see docs/distributed.md."""
        self.engines.pop(w.name).destroy()
        return self.wrap(w.name, w.raw, w.make_optimizer, params)

    # ------------------------------------------------------------ precision
    def _scaler(self, w):  # DeepSpeed scales fp16 losses itself
        return None

    # ------------------------------------------------------------ gradients
    def no_sync(self, w: Wrapped):
        return contextlib.nullcontext()  # accumulation is DeepSpeed's: backward accumulates, step reduces

    def backward(self, loss: torch.Tensor, w: Wrapped) -> None:
        self.engines[w.name].backward(loss, scale_wrt_gas=False)

    @property
    def skips_on_device(self) -> bool:
        return False  # the engine owns the optimizer step (and its own overflow checks)

    def step(self, w: Wrapped, ok: torch.Tensor | None = None) -> None:
        assert ok is None
        self.engines[w.name].step()

    def zero_grad(self, w: Wrapped) -> None:
        self.engines[w.name].zero_grad()

    def gathered(self, w: Wrapped):
        """Full parameters of a ZeRO-3 partitioned net, for reading (G_ema updates)."""
        if self.zero_stage < 3:
            return contextlib.nullcontext()
        import deepspeed
        return deepspeed.zero.GatheredParameters(list(w.raw.parameters()), modifier_rank=None)

    def memory_bytes(self, w: Wrapped) -> dict:
        out = super().memory_bytes(w)
        # ZeRO-1/2 keep an fp32 copy of this rank's partition; ZeRO-3's shard is that copy.
        partitions = getattr(w.optimizer, "single_partition_of_fp32_groups", [])
        out["fp32_partition_bytes"] = sum(_nbytes(t) for t in partitions)
        return out

    # ------------------------------------------------------------ checkpoints
    def state_dict(self, w: Wrapped, folder: str | None = None) -> dict:
        if folder is None:
            raise ValueError("the deepspeed strategy checkpoints into a folder (Trainer.save passes it)")
        self.engines[w.name].save_checkpoint(os.path.join(folder, w.name), tag="state", save_latest=False)
        return {"deepspeed_dir": os.path.join(os.path.basename(folder), w.name), "world_size": self.world_size,
                "zero_stage": self.zero_stage}

    def load_state_dict(self, w: Wrapped, state: dict, folder: str | None = None) -> None:
        if "deepspeed_dir" not in state:
            raise ValueError("this checkpoint was not written by the deepspeed strategy; resume it with the "
                             "strategy that wrote it (single/ddp checkpoints hold plain state dicts)")
        if state["world_size"] != self.world_size:
            raise ValueError(f"this deepspeed checkpoint was written by {state['world_size']} ranks and cannot be "
                             f"resumed by {self.world_size} (ZeRO partitions the state per rank); resume with "
                             f"{state['world_size']} ranks")
        if state["zero_stage"] != self.zero_stage:
            raise ValueError(f"this deepspeed checkpoint was written at ZeRO stage {state['zero_stage']}; "
                             f"set distributed.zero_stage={state['zero_stage']} to resume it")
        # The folder is the .ds beside the .pt being resumed; the path the .pt stores is only
        # checked (an absolute or ../ path there once loaded any folder on disk).
        expected = os.path.join(os.path.basename(folder), w.name)
        if state["deepspeed_dir"] != expected:
            from bigtrain.checkpoint.state import DamagedCheckpoint
            raise DamagedCheckpoint(f"this checkpoint names its DeepSpeed state {state['deepspeed_dir']!r}; bigtrain "
                                    f"reads only the folder beside it ({expected!r})")
        path = os.path.join(folder, w.name)
        if not os.path.isdir(os.path.join(path, "state")):
            raise FileNotFoundError(f"DeepSpeed state {path} of this checkpoint is missing")
        self.engines[w.name].load_checkpoint(path, tag="state", load_optimizer_states=True,
                                             load_lr_scheduler_states=False)
