"""A generator from any file bigtrain writes: an export folder, a training checkpoint or a run dir.
Above train/ (a checkpoint's config is a TrainConfig, its stage a schedule's)."""
from __future__ import annotations

import os

import torch

from bigtrain.checkpoint.schema import Checkpoint
from bigtrain.checkpoint.state import resolve_resume
from bigtrain.config import build
from bigtrain.models import get_family
from bigtrain.models.common.growing import set_stage
from bigtrain.train.config import TrainConfig
from bigtrain.train.schedule import checkpoint_stage

from bigtrain.models.snapshot import is_export, load_generator


def load_generator_from_checkpoint(path: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """-> (G_ema in eval mode, info): the checkpoint's model_info plus "checkpoint" (the file) and
    "config" (its TrainConfig). ``path`` may be a checkpoint file or a run dir."""
    if os.path.isdir(path):
        path = resolve_resume(path, path)
    ckpt = Checkpoint.read(path)
    cfg = build(TrainConfig, ckpt.config, sources=f"the config stored in {path}")
    info = dict(ckpt.model_info, checkpoint=path, config=cfg, kind=ckpt.kind, kimg=ckpt.nimg / 1000, best=ckpt.best)
    G = get_family(info["family"]).build_generator(cfg.generator, info["resolution"], info["channels"], info["c_dim"])
    G.load_state_dict(ckpt.G_ema)
    # A checkpoint taken while growing makes images at its stage (upsampled to full size here).
    stage = checkpoint_stage(ckpt, cfg, info["resolution"])
    set_stage(G, stage.resolution, stage.alpha)
    return G.eval().requires_grad_(False).to(device), info


def load_any_generator(path: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """An export folder (config.json + model.safetensors), a checkpoint file or a run dir ->
    (G_ema in eval mode, info with family, c_dim, label_names, ...)."""
    if is_export(path):
        G, config = load_generator(path, device)
        return G, dict(config, checkpoint=path)
    return load_generator_from_checkpoint(path, device)
