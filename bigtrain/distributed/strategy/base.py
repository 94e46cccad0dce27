"""The strategy interface: the training loop talks only to this.

A strategy owns process-group setup, wrapping a network with its optimizer, backward,
optimizer steps, gradient-sync suppression during accumulation, and reductions. DDP and
DeepSpeed strategies implement the same methods, so the loop never branches on backend.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
from typing import Any, Callable, Iterable, Literal

import torch
from torch import nn

from bigtrain.config import require

from ..env import DistEnv



# What a run may need of a strategy (Strategy.validate): the loss's regularizers and the schedule say
# which they need, and name the config keys that bring each.
SECOND_ORDER = "second-order gradients"  # a gradient differentiated again (R1, path length, WGAN-GP)
WEIGHTS_OUTSIDE_FORWARD = "weights read outside the forward pass"  # orthogonal regularization
REBUILDS_NETS = "nets re-wrapped when the trained parameters change"  # progressive growing
STRIDED_WEIGHTS = "weights in a non-contiguous memory layout"  # train.channels_last

@dataclasses.dataclass
class StrategyConfig:
    strategy: Literal["single", "ddp", "deepspeed"] = "single"  # single: one process; ddp: torch DistributedDataParallel per network; deepspeed: a ZeRO engine per network (launch both with torchrun or srun).
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available, else cpu.
    zero_stage: int = 1  # deepspeed: ZeRO stage 0 (DDP-like), 1 (optimizer state sharded), 2 (+ gradients), 3 (+ parameters).
    deepspeed_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # deepspeed: extra DeepSpeed config, merged over bigtrain's (e.g. {zero_optimization: {overlap_comm: true}}).

    def __post_init__(self):
        require(0 <= self.zero_stage <= 3, "zero_stage", self.zero_stage, "must be 0, 1, 2 or 3")


MakeOptimizer = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


@dataclasses.dataclass
class Wrapped:
    """A network as the strategy holds it: ``module`` is what forward is called on (a DDP
    wrapper or engine under those strategies), ``raw`` the plain nn.Module, ``params`` the
    parameters in use (all of them, or a growing network's current stage's)."""
    name: str
    module: nn.Module
    raw: nn.Module
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    make_optimizer: MakeOptimizer

    def requires_grad_(self, flag: bool) -> None:
        """Train (True) or freeze (False) the net; parameters not in use stay frozen."""
        self.raw.requires_grad_(False)
        if flag:
            for p in self.params:
                p.requires_grad_(True)


def _nbytes(t: torch.Tensor) -> int:
    t = getattr(t, "ds_tensor", t)  # ZeRO-3 keeps this rank's shard there; the param itself is empty
    return t.numel() * t.element_size()


class Strategy(abc.ABC):
    name: str = "base"

    def __init__(self, env: DistEnv, device: torch.device):
        self.env = env
        self.device = device
        self.precision = "fp32"
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    # ------------------------------------------------------------ precision
    def set_precision(self, precision: str, reduced_precision_res: int | None = None) -> None:
        """Call before wrap(). fp16 gets a gradient scaler per network."""
        self.precision = precision
        self.reduced_precision_res = reduced_precision_res

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for forward passes: autocast to bf16/fp16, or nothing for fp32 (and when
        reduced_precision_res leaves the choice to the networks' blocks)."""
        if self.amp_dtype is None or self.reduced_precision_res is not None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _scaler(self, w: Wrapped) -> torch.amp.GradScaler | None:
        if self.precision != "fp16":
            return None
        if w.name not in self.scalers:
            self.scalers[w.name] = torch.amp.GradScaler(self.device.type)
        return self.scalers[w.name]

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    @property
    def world_size(self) -> int:
        return self.env.world_size

    def setup(self) -> None:
        """Create the process group (no-op for a single process)."""

    def teardown(self) -> None:
        """Destroy the process group."""

    @abc.abstractmethod
    def wrap(self, name: str, net: nn.Module, make_optimizer: MakeOptimizer,
             params: list[nn.Parameter] | None = None) -> Wrapped:
        """Wrap ``net`` for training ``params`` (default: all of its parameters)."""

    def rewrap(self, w: Wrapped, params: list[nn.Parameter]) -> Wrapped:
        """The same net training another set of parameters (progressive growing changed what is in
        use). The optimizer keeps its state for parameters that stay and gains the new ones: it
        covers all of the net's parameters, and Adam only updates (and creates state for) those
        that have a gradient."""
        return dataclasses.replace(w, params=list(params))

    def backward(self, loss: torch.Tensor, w: Wrapped) -> None:
        scaler = self._scaler(w)
        (scaler.scale(loss) if scaler is not None else loss).backward()

    @property
    def skips_on_device(self) -> bool:
        """Whether :meth:`step` takes ``ok``: an optimizer built with ``fused=True`` (torch's fused
        Adam on a GPU) then skips a non-finite step on the device, with no host sync."""
        return self.device.type == "cuda"

    def step(self, w: Wrapped, ok: torch.Tensor | None = None) -> None:
        """Apply the accumulated gradients, then clear them (fp16: a step whose scaled
        gradients overflowed is skipped and the scale lowered, as GradScaler does).

        ``ok`` (only where :attr:`skips_on_device`): a 0-dim float tensor on the device, 1 when the
        loss was finite on every rank; the fused optimizer leaves the weights, its moments and
        its step count untouched where it is 0."""
        scaler = self._scaler(w)
        if ok is not None:
            assert self.skips_on_device and getattr(w.optimizer, "_step_supports_amp_scaling", False)
            if scaler is not None:
                # GradScaler hands the fused optimizer its own overflow flag. Dividing the gradients
                # by ok makes a non-finite loss an overflow too (a NaN loss can leave finite gradients).
                grads = [p.grad for p in w.params if p.grad is not None]
                if grads:
                    torch._foreach_div_(grads, ok.to(grads[0].dtype))
                scaler.step(w.optimizer)
                scaler.update()
            else:
                w.optimizer.found_inf = (1 - ok).float()
                try:
                    w.optimizer.step()
                finally:
                    del w.optimizer.found_inf
        elif scaler is not None:
            scaler.step(w.optimizer)
            scaler.update()
        else:
            w.optimizer.step()
        w.optimizer.zero_grad(set_to_none=True)

    def zero_grad(self, w: Wrapped) -> None:
        w.optimizer.zero_grad(set_to_none=True)

    def no_sync(self, w: Wrapped) -> contextlib.AbstractContextManager:
        """Context in which backward does not all-reduce (all but the last accumulation round)."""
        return contextlib.nullcontext()

    def memory_bytes(self, w: Wrapped) -> dict:
        """Bytes this rank holds for a net: parameters (only its shard where they are sharded)
        and optimizer state, measured from the live tensors."""
        opt = getattr(w.optimizer, "optimizer", w.optimizer)  # DeepSpeed wraps the torch optimizer
        state = sum(_nbytes(v) for st in opt.state.values() for v in st.values()
                    if isinstance(v, torch.Tensor) and v.numel() > 1)
        return {"param_bytes": sum(_nbytes(p) for p in w.raw.parameters()), "optimizer_state_bytes": state,
                "fp32_partition_bytes": 0,
                "num_params": sum(getattr(p, "ds_numel", p.numel()) for p in w.raw.parameters())}

    def validate(self, needs: dict[str, list[str]], source: str) -> None:
        """Refuse, with a ConfigError naming the config keys, a run whose ``needs`` (a requirement
        from NEEDS -> the keys that bring it, from the loss and the schedule) this strategy cannot
        meet."""

    def set_batch(self, batch_gpu: int, rounds: int) -> None:
        """Per-device batch and accumulation rounds (before wrap; DeepSpeed configures from them)."""

    def gathered(self, w: Wrapped) -> contextlib.AbstractContextManager:
        """Context in which w.raw's parameters are whole (ZeRO-3 partitions them)."""
        return contextlib.nullcontext()

    def state_dict(self, w: Wrapped, folder: str | None = None) -> dict:
        """Training state of a net; a sharding strategy may write its shards into ``folder``."""
        state = {"module": w.raw.state_dict(), "optimizer": w.optimizer.state_dict()}
        scaler = self._scaler(w)
        if scaler is not None:
            state["grad_scaler"] = scaler.state_dict()
        return state

    def load_state_dict(self, w: Wrapped, state: dict, folder: str | None = None) -> None:
        if "module" not in state:
            raise ValueError("this checkpoint holds DeepSpeed engine state; resume it with "
                             "distributed.strategy=deepspeed")
        w.raw.load_state_dict(state["module"])
        w.optimizer.load_state_dict(state["optimizer"])
        scaler = self._scaler(w)
        if scaler is not None and "grad_scaler" in state:
            scaler.load_state_dict(state["grad_scaler"])

    def all_reduce(self, t: torch.Tensor, op: Literal["mean", "sum", "min", "max"] = "mean") -> torch.Tensor:
        """Reduce over ranks (identity for one process)."""
        return t

    def barrier(self) -> None:
        """Wait for every rank."""

    def all_gather_object(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order, on every rank (picklable objects)."""
        return [obj]
