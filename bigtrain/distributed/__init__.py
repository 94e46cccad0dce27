"""Process groups and strategies. The strategy is the only code that knows DDP or DeepSpeed."""
from .env import DistEnv
from bigtrain.console import print0
from .strategy import Strategy, Wrapped, build_strategy

__all__ = ["DistEnv", "Strategy", "Wrapped", "build_strategy", "print0"]
