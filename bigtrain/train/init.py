"""Fine-tuning: the weights a run starts from (``train.init_from``).

Three kinds of file, each read without running anything in it:

- an NVlabs pickle (stylegan2-ada-pytorch, stylegan3's StyleGAN2): G, D and G_ema through
  bigtrain/models/stylegan2/nvlabs_pickle.py and the family's mapping;
- a bigtrain checkpoint (``.pt``, train or best): G_ema, and G and D where the checkpoint holds them
  whole (single-process and DDP runs; DeepSpeed keeps them in shards);
- an export folder (``bigtrain export`` or ``bigtrain import``): G_ema, which also starts G.

The run's networks are built from its own config; the file must describe the same ones (every
setting that differs is named, as ``key=value`` overrides to paste), and every tensor must fit.
Only weights are taken: the optimizers start fresh and kimg at 0.
"""
from __future__ import annotations

import dataclasses
import os

import torch

from bigtrain.checkpoint import sha256_file
from bigtrain.config import ConfigError, to_dict


@dataclasses.dataclass
class Start:
    """The weights a run starts from, in bigtrain's names."""
    G: dict[str, torch.Tensor]
    G_ema: dict[str, torch.Tensor]
    D: dict[str, torch.Tensor] | None  # None: the file has no D (D starts from its initialisation)
    record: dict  # where it came from, for RUN_DIR/init_from.json


def read_start(path: str, cfg, model_info: dict, source: str) -> Start:
    """Read ``path`` and check it against the run's config ``cfg`` and data (``model_info``)."""
    from bigtrain.models.stylegan2.nvlabs_pickle import ForeignPickleError
    from bigtrain.models.snapshot import is_export

    if not os.path.exists(path):
        raise ConfigError(f"config error in {source}: key 'train.init_from': {path} does not exist")
    record = {"path": os.path.abspath(path)}
    try:
        if is_export(path):
            start = _from_export(path, cfg, model_info, record)
        elif os.path.isdir(path):  # a run dir: its newest checkpoint, found as generate and eval find it
            from bigtrain.checkpoint.state import resolve_resume
            try:
                newest = resolve_resume(path, path)
            except FileNotFoundError:
                raise ConfigError(f"config error in {source}: key 'train.init_from': {path} is a folder but neither "
                                  f"an export (no config.json) nor a run dir with checkpoints/ckpt-*.pt; give a "
                                  f"checkpoint file, a run dir, an export folder or an NVlabs pickle") from None
            record["path"] = os.path.abspath(newest)
            start = _from_checkpoint(newest, cfg, model_info, record)
        elif _is_zip(path):
            start = _from_checkpoint(path, cfg, model_info, record)
        else:
            start = _from_nvlabs(path, cfg, model_info, record)
    except ForeignPickleError as e:
        raise ConfigError(f"config error in {source}: key 'train.init_from': {e}") from None
    except _Mismatch as e:
        raise ConfigError(f"config error in {source}: key 'train.init_from': {path} {e}") from None
    return start


class _Mismatch(ValueError):
    pass


def _is_zip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"  # torch.save's format; NVlabs pickles are plain pickles


# Settings of an unconditional discriminator that build nothing (its label embedding).
UNUSED_UNCONDITIONAL = ("cmap_dim", "mapping_layers", "mapping_lr_mul")


def _same_settings(which: str, theirs: dict, ours: dict, c_dim: int = 0) -> None:
    """Every setting of network ``which`` ("generator", "discriminator") that differs, as overrides."""
    skip = UNUSED_UNCONDITIONAL if which == "discriminator" and not c_dim else ()
    diffs = [f"{which}.{k}={yaml_value(theirs[k])} (the run's config has {yaml_value(ours.get(k))})"
             for k in theirs if k not in skip and theirs[k] != ours.get(k)]
    if diffs:
        raise _Mismatch(f"describes another {which} than the run's config; set:\n  " + "\n  ".join(diffs))


def yaml_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(yaml_value(x) for x in v) + "]"
    return str(v)


def _same_data(info: dict, model_info: dict) -> None:
    for k, what in (("resolution", "resolution"), ("channels", "image channels"), ("c_dim", "classes")):
        if info.get(k) != model_info.get(k):
            raise _Mismatch(f"has {what} {info.get(k)}, the run's data {model_info.get(k)}")


def _from_nvlabs(path: str, cfg, model_info: dict, record: dict) -> Start:
    from bigtrain.models.stylegan2.nvlabs_pickle import ForeignPickleError, read_pickle
    from bigtrain.models.stylegan2.nvlabs import FAMILY, read_discriminator, read_generator

    if cfg.model != FAMILY:
        raise _Mismatch(f"is an NVlabs pickle: its networks are {FAMILY}, the run's model is {cfg.model}")
    data = read_pickle(path)
    if "G_ema" not in data:
        raise ForeignPickleError(f"{path} has no 'G_ema' (it holds {', '.join(map(str, data)) or 'nothing'})")
    g_ema = read_generator(data["G_ema"], "G_ema")
    g = read_generator(data["G"], "G") if data.get("G") is not None else g_ema
    d = read_discriminator(data["D"]) if data.get("D") is not None else None
    _same_data({"resolution": g_ema.resolution, "channels": g_ema.channels, "c_dim": g_ema.c_dim}, model_info)
    _same_settings("generator", to_dict(g_ema.config), to_dict(cfg.generator))
    if d is not None:
        _same_settings("discriminator", to_dict(d.config), to_dict(cfg.discriminator), d.c_dim)
    record.update(kind="nvlabs-pickle", sha256=sha256_file(path), nets=["G_ema", "G"] + (["D"] if d else []),
                  num_fp16_res=g_ema.num_fp16_res)
    return Start(G=g.state, G_ema=g_ema.state, D=d.state if d else None, record=record)


def _from_checkpoint(path: str, cfg, model_info: dict, record: dict) -> Start:
    from bigtrain.checkpoint.schema import Checkpoint

    ckpt = Checkpoint.read(path)
    if ckpt.model_info.get("family") != cfg.model:
        raise _Mismatch(f"holds a {ckpt.model_info.get('family')} model, the run's model is {cfg.model}")
    _same_data(ckpt.model_info, model_info)
    theirs = ckpt.config
    _same_settings("generator", theirs.get("generator") or {}, to_dict(cfg.generator))
    G, D = ckpt.G_ema, None
    nets = ["G_ema"]
    strategy = ckpt.strategy or {}
    if isinstance(strategy.get("G"), dict) and "module" in strategy["G"]:
        G = strategy["G"]["module"]
        nets.append("G")
    if isinstance(strategy.get("D"), dict) and "module" in strategy["D"]:
        _same_settings("discriminator", theirs.get("discriminator") or {}, to_dict(cfg.discriminator),
                       model_info["c_dim"])
        D = strategy["D"]["module"]
        nets.append("D")
    record.update(kind=f"bigtrain-checkpoint ({ckpt.kind})", sha256=sha256_file(path), nets=nets,
                  kimg=ckpt.nimg / 1000)
    return Start(G=G, G_ema=ckpt.G_ema, D=D, record=record)


def _from_export(path: str, cfg, model_info: dict, record: dict) -> Start:
    from bigtrain.models.snapshot import load_generator
    from bigtrain.models.snapshot import CONFIG

    G, config = load_generator(path)
    if config["family"] != cfg.model:
        raise _Mismatch(f"holds a {config['family']} generator, the run's model is {cfg.model}")
    _same_data(config, model_info)
    _same_settings("generator", config["generator"], to_dict(cfg.generator))
    state = {k: v.clone() for k, v in G.state_dict().items()}
    record.update(kind="bigtrain-export", sha256=sha256_file(os.path.join(path, CONFIG)), nets=["G_ema"],
                  source=config.get("source") or {})
    return Start(G=state, G_ema=state, D=None, record=record)


def load_into(net: torch.nn.Module, state: dict[str, torch.Tensor], what: str, path: str) -> None:
    """Load ``state`` into ``net``, naming the first tensor that is missing, extra or of another shape."""
    expected = net.state_dict()
    for k in sorted(set(expected) | set(state)):
        if k not in state:
            raise ConfigError(f"train.init_from {path}: its {what} has no tensor '{k}', which the run's {what} has")
        if k not in expected:
            raise ConfigError(f"train.init_from {path}: its {what} has tensor '{k}', which the run's {what} has not")
        if tuple(state[k].shape) != tuple(expected[k].shape):
            raise ConfigError(f"train.init_from {path}: {what} tensor '{k}' has shape {tuple(state[k].shape)} there, "
                              f"{tuple(expected[k].shape)} in the run's {what}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
