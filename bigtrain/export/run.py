"""``bigtrain export``: a checkpoint's G_ema -> an export folder, each format checked as it is made."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import socket
from typing import Callable

import numpy as np
import torch

from bigtrain.checkpoint.state import pid_alive

from .graph import Sampler, example_inputs, run_onnx, run_torchscript, to_onnx, to_torchscript
from bigtrain.models.snapshot import CONFIG, DTYPES, WEIGHTS, ExportError, is_export, load_generator, save_snapshot, source_of, write_bytes

FORMATS = ("safetensors", "onnx", "torchscript")
FILES = {"onnx": "generator.onnx", "torchscript": "generator.torchscript.pt"}
CHECKS = "checks.json"
CHECK_BATCH = 3  # traced with 2 images, checked with 3: the batch size is free in the graphs
# Largest |difference| from the checkpoint's G_ema accepted, on images in [-1, 1]: float32 graphs
# differ only by summation order (BigGAN's truncation by its quantile approximation, about 1e-6).
TOLERANCE = {"float32": 1e-3, "float16": 5e-2, "bfloat16": 2e-1}


def parse_formats(text: str) -> list[str]:
    names = FORMATS if text == "all" else [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in names if f not in FORMATS]
    if bad or not names:
        raise ExportError(f"--format {text}: expected 'all' or a comma-separated list of {', '.join(FORMATS)}")
    return [f for f in FORMATS if f in names]  # safetensors + config.json are always written


def _refuse_run_dir(out: str, checkpoint: str) -> None:
    """An export goes in a folder of its own: not the run dir, its checkpoints folder, or any
    folder that holds checkpoints (moving files in would mix the two, and a later export would
    delete what it takes for an earlier export's graph)."""
    ckpt_dir = os.path.dirname(os.path.realpath(checkpoint))
    run_dir = os.path.dirname(ckpt_dir) if os.path.basename(ckpt_dir) == "checkpoints" else ckpt_dir
    target = os.path.realpath(out)
    if (target in (ckpt_dir, run_dir) or os.path.isdir(os.path.join(target, "checkpoints"))
            or glob.glob(os.path.join(glob.escape(target), "ckpt-*.pt"))):
        raise ExportError(f"--out {out} is a run dir or holds checkpoints; give the export a folder of its own")


def _host() -> str:
    """This host's name as it appears in staging folder names (only [A-Za-z0-9.-])."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())


@contextlib.contextmanager
def staging(out: str):
    """A fresh staging folder beside ``out`` (``OUT.staging-HOST-PID``) to write and check an export in
    before its files are moved into ``out``; removed afterwards, also on failure. Staging folders of
    killed exports on this host are cleared first."""
    _remove_dead_staging(out)
    stage = f"{out}.staging-{_host()}-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _remove_dead_staging(out: str) -> None:
    """Staging folders beside ``out`` left by an export that was killed (its process is gone)."""
    host = _host()
    for folder in glob.glob(glob.escape(out) + ".staging-*"):
        m = re.fullmatch(r"\.staging-(.+)-(\d+)", folder[len(out):])
        if not m or m.group(1) != host or not os.path.isdir(folder):
            continue  # another host's export (a shared file system): its PID cannot be judged here
        if not pid_alive(m.group(2)):
            shutil.rmtree(folder, ignore_errors=True)


def export_generator(checkpoint: str, out: str, formats: list[str] = ("safetensors",), dtype: str = "float32",
                     trunc: float | None = None, standing_stats: int = 0,
                     printer: Callable[[str], None] = print) -> dict:
    """Export a checkpoint's (or run dir's newest checkpoint's) G_ema to ``out``; -> the checks
    (max abs error of each format against the checkpoint's G_ema, also written to checks.json).
    Raises ExportError, writing nothing more, when a format does not reproduce the generator."""
    from bigtrain.models.sampling import generate_images
    from bigtrain.models.sampling import standing_stats as run_standing_stats

    from .load import load_generator_from_checkpoint

    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExportError(f"--out {out} is a file; give a folder")
    if is_export(checkpoint):  # an export (bigtrain import's, say) re-exported with graphs or in another dtype
        if os.path.realpath(out) == os.path.realpath(checkpoint):
            raise ExportError(f"--out {out} is the export being read; give the new export a folder of its own")
        G, info = _from_export(checkpoint)
    else:
        G, info = load_generator_from_checkpoint(checkpoint, "cpu")  # graphs are traced from the reference ops
        _refuse_run_dir(out, info["checkpoint"])
    if standing_stats:
        run_standing_stats(G, standing_stats)
    sampler = Sampler(G).eval()
    # Checked without truncation and with it (the given value, else a typical one). The reference
    # is bigtrain generate's own path, which also rejects a --trunc the family has no use for.
    seeds = list(range(CHECK_BATCH))
    truncs = [None] + ([trunc] if trunc is not None else [G.truncation_check] if sampler.has_trunc else [])
    check_args = [example_inputs(sampler, CHECK_BATCH, t, seed=0) for t in truncs]
    want = [generate_images(G, seeds, trunc=t) for t in truncs]
    tol = TOLERANCE[dtype]
    checks = {"images": CHECK_BATCH, "seeds": f"0-{CHECK_BATCH - 1}", "trunc": truncs,
              "tolerance": {"safetensors": tol, "graphs": TOLERANCE["float32"]}}

    graphs = {}
    if "onnx" in formats:
        graphs["onnx"] = to_onnx(sampler, example_inputs(sampler, 2, trunc, seed=100))
        got = [run_onnx(graphs["onnx"], a, sampler.input_names()) for a in check_args]
        checks["onnx"] = _check("ONNX Runtime", got, want, TOLERANCE["float32"])
    if "torchscript" in formats:
        graphs["torchscript"] = to_torchscript(sampler, example_inputs(sampler, 2, trunc, seed=100))
        got = [run_torchscript(graphs["torchscript"], a).numpy() for a in check_args]
        checks["torchscript"] = _check("TorchScript", got, want, TOLERANCE["float32"])

    # Everything is written and checked in a staging folder beside ``out``, then moved in with
    # config.json last: a failure or a kill leaves an earlier export in ``out`` as it was.
    out = os.path.normpath(out)
    with staging(out) as stage:
        files = {k: FILES[k] for k in graphs}
        config = save_snapshot(G, info, stage, dtype, trunc, info.get("source") or source_of(info), files)
        G2, _ = load_generator(stage)
        checks["safetensors"] = _check("load_generator",
                                       [generate_images(G2, seeds, trunc=t).numpy() for t in truncs], want, tol)
        for k, blob in graphs.items():
            write_bytes(blob, os.path.join(stage, FILES[k]))
        write_bytes((json.dumps(checks, indent=2) + "\n").encode(), os.path.join(stage, CHECKS))
        os.makedirs(out, exist_ok=True)
        for name in [WEIGHTS, *files.values(), CHECKS, CONFIG]:
            os.replace(os.path.join(stage, name), os.path.join(out, name))
        for k, name in FILES.items():  # an earlier export's graph that this one does not have
            if k not in graphs and os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    for name in ["safetensors"] + list(graphs):
        c = checks[name]
        file = config["weights"]["file"] if name == "safetensors" else FILES[name]
        size = os.path.getsize(os.path.join(out, file))
        printer(f"{file:<26} {size / 2 ** 20:8.2f} MiB  max |diff| vs checkpoint G_ema {c['max_abs_err']:.2e}")
    printer(f"wrote {out} ({info['family']}, {info['resolution']}x{info['resolution']}, "
            f"{config['weights']['parameters'] / 1e6:.2f}M parameters, {dtype})")
    return checks


def _from_export(folder: str):
    """(G, info) of an export folder, with its own source record carried over."""
    import types

    from bigtrain.config import build
    from bigtrain.models import get_family

    G, config = load_generator(folder)
    gcfg = build(get_family(config["family"]).generator.Config, config["generator"], sources=folder, prefix="generator")
    info = {k: config[k] for k in ("family", "resolution", "channels", "c_dim", "label_names")}
    info.update(config=types.SimpleNamespace(generator=gcfg), checkpoint=folder,
                source=dict(config.get("source") or {}, export=os.path.abspath(folder)))
    return G, info


def _check(what: str, got: list[np.ndarray], want: list[torch.Tensor], tol: float) -> dict:
    err = 0.0
    for g, w in zip(got, want):
        w = w.numpy()
        if g.shape != w.shape:
            raise ExportError(f"{what} made images of shape {g.shape}, the checkpoint's G_ema {w.shape}")
        err = max(err, float(np.abs(g - w).max()))
    if not np.isfinite(err) or err > tol:
        raise ExportError(f"{what} does not reproduce the checkpoint's G_ema: max |difference| {err:.3g} "
                          f"> {tol:g}; this export was not written")
    return {"max_abs_err": err}
