"""The export snapshot: G_ema's weights as ``model.safetensors`` plus ``config.json``, the folder
`bigtrain export` and `bigtrain import` write and generate, eval, export, `train.init_from` and
``bigtrain.load_generator`` read. Beside the
family registry that rebuilds the generator, below the trainer (``train.init_from``) and export.

Loading one reads JSON and safetensors only, never a pickle, so an export from an untrusted source
cannot run code on load. ``config.json`` holds what rebuilding the generator needs (family, its
config section, resolution, channels, classes and their names, the growing stage) and what a user
wants to know (truncation, w_avg, where it was trained); it also records the weights' SHA-256, so
a config.json and a model.safetensors from different exports are refused instead of mixed.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch

from bigtrain.checkpoint.state import sha256_file, write_atomic
from bigtrain.checkpoint.schema import size_problem

FORMAT = "bigtrain-generator"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ExportError(ValueError):
    """An export that cannot be written or loaded; the message names the file and the problem."""


def is_export(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG))


def write_bytes(data: bytes, path: str) -> None:
    write_atomic(path, lambda f: f.write(data))


def weights_for_export(G: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """G's state dict as standalone contiguous CPU tensors; floating ones in ``dtype``, the rest
    (batch-norm counters) as they are."""
    out = {}
    for k, v in G.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous().clone()
    return out


def save_snapshot(G: torch.nn.Module, info: dict, out: str, dtype: str = "float32",
                  trunc: float | None = None, source: dict | None = None, files: dict | None = None) -> dict:
    """Write ``out``/model.safetensors and ``out``/config.json; -> the config written.

    ``info``: family, resolution, channels, c_dim, label_names and "config" (the TrainConfig).
    The bytes depend only on G's weights and these arguments: the same checkpoint gives the same
    files. ``dtype`` and ``trunc`` are checked by the caller (export_generator)."""
    from safetensors.torch import save

    from bigtrain._version import __version__
    from bigtrain.config import to_dict

    os.makedirs(out, exist_ok=True)
    tensors = weights_for_export(G, DTYPES[dtype])
    # One metadata key: safetensors writes its metadata map in hash order, so two keys could swap.
    blob = save(tensors, metadata={"format": FORMAT})
    write_bytes(blob, os.path.join(out, WEIGHTS))
    cfg = info["config"]
    w_avg = G.truncation_centre()
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bigtrain_version": __version__,
        "family": info["family"],
        "generator": to_dict(cfg.generator),
        "resolution": info["resolution"],
        "channels": info["channels"],
        "c_dim": info["c_dim"],
        "z_dim": G.z_dim,
        "label_names": list(info.get("label_names") or []),
        "stage": {"resolution": G.stage_res, "alpha": G.alpha} if G.growable else None,
        "truncation": {"arg": G.truncation_arg, "default": trunc},
        "w_avg": [round(float(v), 8) for v in w_avg] if w_avg is not None else None,
        "dtype": dtype,
        "weights": {"file": WEIGHTS, "sha256": hashlib.sha256(blob).hexdigest(), "tensors": len(tensors),
                    "parameters": sum(p.numel() for p in G.parameters())},
        "files": dict(files or {}),  # the graph exports beside the weights (format -> file)
        "source": source or {},
    }
    write_bytes((json.dumps(config, indent=2) + "\n").encode(), os.path.join(out, CONFIG))
    return config


def read_config(folder: str) -> dict:
    path = os.path.join(folder, CONFIG)
    if not os.path.isfile(path):
        raise ExportError(f"{folder} is not a bigtrain export: it has no {CONFIG}")
    try:
        with open(path) as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ExportError(f"{path}: not a bigtrain generator config (\"format\" is not \"{FORMAT}\")")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ExportError(f"{path}: format version {config['format_version']} is newer than this bigtrain "
                          f"understands ({FORMAT_VERSION}); upgrade bigtrain")
    for key in ("family", "generator", "resolution", "channels", "c_dim", "weights"):
        if key not in config:
            raise ExportError(f"{path}: key '{key}' is missing")
    # Sizes bound before any network is built from them (a huge or zero resolution made a traceback).
    problem = size_problem(config)
    if problem:
        raise ExportError(f"{path}: {problem}")
    return config


def load_generator(folder: str, device: str | torch.device = "cpu", verify: bool = True) -> tuple[torch.nn.Module, dict]:
    """Rebuild an exported generator: -> (G in eval mode, float32, on ``device``; its config.json).

    Reads only JSON and safetensors. ``verify`` checks the weights against the SHA-256 that
    config.json records. Every mismatch between the two files is an ExportError naming them."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from bigtrain.config import ConfigError, build
    from .registry import family_names, get_family
    from .common.growing import set_stage

    config = read_config(folder)
    cpath = os.path.join(folder, CONFIG)
    # The weights are always model.safetensors in the export folder: a config.json naming another
    # path (../secret, /dev/zero) is refused, not followed.
    if config["weights"].get("file", WEIGHTS) != WEIGHTS:
        raise ExportError(f"{cpath}: key 'weights.file' must be {WEIGHTS!r}, got {config['weights'].get('file')!r}")
    wpath = os.path.join(folder, WEIGHTS)
    if not os.path.isfile(wpath):
        raise ExportError(f"{folder}: {WEIGHTS} (a regular file) does not exist")
    with open(wpath, "rb") as f:
        blob = f.read()
    if verify and hashlib.sha256(blob).hexdigest() != config["weights"].get("sha256"):
        raise ExportError(f"{wpath} does not match {cpath}: its SHA-256 differs from the one recorded there "
                          f"(the files come from different exports, or one was modified)")
    try:
        family = get_family(config["family"])
    except KeyError:
        raise ExportError(f"{cpath}: key 'family': {config['family']!r} is not a model family "
                          f"(known: {', '.join(family_names())})") from None
    try:
        gcfg = build(family.generator.Config, config["generator"], sources=cpath, prefix="generator")
    except ConfigError as e:
        raise ExportError(str(e)) from None
    labels = config.get("label_names") or []
    if labels and len(labels) != config["c_dim"]:
        raise ExportError(f"{cpath}: key 'label_names' has {len(labels)} names but 'c_dim' is {config['c_dim']}")
    try:
        tensors = load(blob)
    except (SafetensorError, ValueError, OSError) as e:
        raise ExportError(f"{wpath}: not a readable safetensors file ({e})") from None

    def build_G():
        try:
            return family.build_generator(gcfg, config["resolution"], config["channels"], config["c_dim"])
        except (ValueError, TypeError, ArithmeticError) as e:
            raise ExportError(f"{cpath}: the generator cannot be built from it: {e}") from None

    # Shapes first, on the meta device (no memory): a config.json inflated to a huge generator is
    # refused against the weights before anything that size is allocated.
    try:
        with torch.device("meta"):
            shapes = build_G().state_dict()
    except ExportError:
        raise
    except Exception:  # a family whose constructor needs real tensors: checked after the build instead
        shapes = None
    if shapes is not None:
        _check_weights(shapes, tensors, cpath, wpath)
    G = build_G()
    expected = G.state_dict()
    _check_weights(expected, tensors, cpath, wpath)
    G.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    w_avg = G.truncation_centre()
    if w_avg is not None and config.get("w_avg") is not None:
        listed = torch.tensor(config["w_avg"], dtype=torch.float32)
        if listed.shape != w_avg.shape or not torch.allclose(listed, w_avg, rtol=1e-2, atol=1e-6):
            raise ExportError(f"{cpath}: key 'w_avg' does not match the weights' mapping.w_avg in {wpath} "
                              f"(the truncation centre; one of the files was modified)")
    stage = config.get("stage")
    if stage:
        set_stage(G, stage["resolution"], stage["alpha"])
    return G.eval().requires_grad_(False).to(device), config


def _check_weights(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], cpath: str, wpath: str) -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        what = (f"{len(missing)} tensors the config's generator needs are missing (first: {missing[0]})" if missing
                else f"{len(extra)} tensors are not in the config's generator (first: {extra[0]})")
        raise ExportError(f"{wpath} does not fit the generator {cpath} describes: {what}")
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise ExportError(f"{wpath} does not fit the generator {cpath} describes: tensor '{k}' has shape "
                              f"{tuple(got[k].shape)} in the weights, {tuple(v.shape)} in a generator built from the config")


def source_of(info: dict) -> dict[str, Any]:
    """Where a checkpoint's generator came from, for config.json."""
    path = os.path.abspath(info["checkpoint"])
    folder = os.path.dirname(path)
    run_dir = os.path.dirname(folder) if os.path.basename(folder) == "checkpoints" else folder
    out = {"checkpoint": path, "checkpoint_sha256": sha256_file(path), "run_dir": run_dir,
           "kimg": info.get("kimg"), "kind": info.get("kind", "train"), "data": info["config"].data.source}
    if info.get("best"):
        out["best"] = info["best"]
    return out

