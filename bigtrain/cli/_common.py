"""What several commands share."""
from __future__ import annotations


def load_train_config(path: str, overrides: list[str]):
    from bigtrain.config import load_config
    from bigtrain.train.config import TrainConfig
    return load_config(path, overrides, TrainConfig)
