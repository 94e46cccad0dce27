from __future__ import annotations

import torch

from ..env import DistEnv
from .base import Strategy, StrategyConfig, Wrapped
from .ddp import DDPStrategy
from .deepspeed import DeepSpeedStrategy
from .single import SingleStrategy

STRATEGIES: dict[str, type[Strategy]] = {"single": SingleStrategy, "ddp": DDPStrategy, "deepspeed": DeepSpeedStrategy}


def resolve_device(cfg: StrategyConfig, env: DistEnv) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def build_strategy(cfg: StrategyConfig, env: DistEnv | None = None) -> Strategy:
    env = env or DistEnv.from_environ()
    if env.world_size > 1 and cfg.strategy == "single":
        raise ValueError(f"distributed.strategy=single cannot run {env.world_size} processes "
                         f"(launched by {env.launcher}); run one process or choose a distributed strategy")
    device = resolve_device(cfg, env)
    if cfg.strategy == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise ValueError("distributed.strategy=deepspeed needs DeepSpeed: pip install -e '.[deepspeed]'") from None
        return DeepSpeedStrategy(env, device, cfg.zero_stage, cfg.deepspeed_config)
    return STRATEGIES[cfg.strategy](env, device)


__all__ = ["STRATEGIES", "Strategy", "StrategyConfig", "Wrapped", "build_strategy", "resolve_device"]
