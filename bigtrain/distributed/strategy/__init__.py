from __future__ import annotations

import torch

from ..env import DistEnv
from .base import Strategy, StrategyConfig, Wrapped
from .ddp import DDPStrategy
from .deepspeed import DeepSpeedStrategy
from .group import ProcessGroupStrategy
from .single import SingleStrategy

STRATEGIES: dict[str, type[Strategy]] = {"single": SingleStrategy, "ddp": DDPStrategy, "deepspeed": DeepSpeedStrategy}


def resolve_device(cfg: StrategyConfig, env: DistEnv) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def check_world_size(strategy: str, world_size: int, where: str) -> None:
    """A strategy that cannot run ``world_size`` processes is an error (``where``: how they come about)."""
    if world_size > 1 and strategy == "single":
        raise ValueError(f"distributed.strategy=single cannot run {world_size} processes ({where}); run one "
                         f"process or set distributed.strategy to ddp or deepspeed")


def build_strategy(cfg: StrategyConfig, env: DistEnv | None = None) -> Strategy:
    env = env or DistEnv.from_environ()
    check_world_size(cfg.strategy, env.world_size, f"launched by {env.launcher}")
    device = resolve_device(cfg, env)
    if cfg.strategy == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise ValueError("distributed.strategy=deepspeed needs DeepSpeed: pip install -e '.[deepspeed]'") from None
        return DeepSpeedStrategy(env, device, cfg.zero_stage, cfg.deepspeed_config)
    return STRATEGIES[cfg.strategy](env, device)


def build_collectives(device: str, env: DistEnv | None = None) -> Strategy:
    """The ranks of the job and the collectives between them, for work that trains nothing
    (evaluation): a process group over several ranks, nothing for one. Not set up yet."""
    env = env or DistEnv.from_environ()
    cls = ProcessGroupStrategy if env.world_size > 1 else SingleStrategy
    return cls(env, resolve_device(StrategyConfig(device=device), env))


__all__ = ["STRATEGIES", "Strategy", "StrategyConfig", "Wrapped", "build_collectives", "build_strategy",
           "check_world_size", "resolve_device"]
