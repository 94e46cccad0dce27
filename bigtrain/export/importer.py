"""``bigtrain import``: an NVlabs StyleGAN2 pickle's G_ema -> an export folder, running nothing in it.

The pickle is read by bigtrain/models/stylegan2/nvlabs_pickle.py (an allow-list of rebuilders; the Python source
the records carry is never compiled) and mapped onto bigtrain's StyleGAN2 by
bigtrain/models/stylegan2/nvlabs.py. The folder is written like ``bigtrain export`` writes one
(staged beside ``out``, reloaded and compared, then moved in with config.json last), so generate,
export --format onnx, eval and ``bigtrain.load_generator`` work on it.
"""
from __future__ import annotations

import os
import types
from typing import Callable

from bigtrain.checkpoint import sha256_file

from .run import staging
from bigtrain.models.snapshot import CONFIG, WEIGHTS, ExportError, is_export, load_generator, save_snapshot

CHECK_SEEDS = [0, 1, 2]


def writer_of(module_src: str) -> str:
    """Which NVlabs code wrote a record, from its source text (read, never run)."""
    if "fused_modconv_default" in module_src:
        return "NVlabs/stylegan3 (training/networks_stylegan2.py)"
    return "NVlabs/stylegan2-ada-pytorch (training/networks.py)"


def import_nvlabs(src: str, out: str, trunc: float | None = None, printer: Callable[[str], None] = print) -> dict:
    """Write ``src``'s G_ema to the export folder ``out``; -> the config.json written."""
    from bigtrain.models.stylegan2.nvlabs_pickle import ForeignPickleError, read_pickle
    from bigtrain.models.sampling import generate_images
    from bigtrain.models.stylegan2.nvlabs import FAMILY, read_discriminator, read_generator

    if os.path.isdir(src):
        what = ("an export folder already: generate, export and eval read it as it is"
                if is_export(src) else "a folder")
        raise ExportError(f"{src} is {what}; bigtrain import reads an NVlabs network pickle (network-snapshot-*.pkl)")
    if not os.path.isfile(src):
        raise ExportError(f"{src}: no such file (give an NVlabs network pickle, e.g. network-snapshot-*.pkl)")
    if os.path.isdir(out) and os.path.isdir(os.path.join(out, "checkpoints")):
        raise ExportError(f"--out {out} is a run dir; give the import a folder of its own")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExportError(f"--out {out} is a file; give a folder")
    data = read_pickle(src)
    if "G_ema" not in data:
        raise ForeignPickleError(f"{src} has no 'G_ema' (it holds {', '.join(map(str, data)) or 'nothing'})")
    imported = read_generator(data["G_ema"], "G_ema")
    G = imported.build().requires_grad_(False)
    from bigtrain.config import to_dict
    from bigtrain.train.init import yaml_value as _yaml

    # What a fine-tuning run's config needs to describe these networks (train.init_from checks it).
    notes = ["generator: {" + ", ".join(f"{k}: {_yaml(v)}" for k, v in to_dict(imported.config).items()) + "}"]
    if data.get("D") is not None:
        try:
            d = read_discriminator(data["D"])
            notes.append("discriminator: {" + ", ".join(f"{k}: {_yaml(v)}" for k, v in to_dict(d.config).items()) + "}")
        except ForeignPickleError as e:
            notes.append(f"D: not usable by train.init_from ({e})")
    if trunc is not None and not 0 <= trunc <= 1:
        raise ExportError(f"--trunc {trunc}: expected a value in [0, 1]")
    info = {"family": FAMILY, "resolution": imported.resolution, "channels": imported.channels,
            "c_dim": imported.c_dim, "label_names": [], "config": types.SimpleNamespace(generator=imported.config)}
    source = {"nvlabs_pickle": os.path.abspath(src), "sha256": sha256_file(src), "network": "G_ema",
              "written_by": writer_of(data["G_ema"].module_src), "num_fp16_res": imported.num_fp16_res}

    out = os.path.normpath(out)
    with staging(out) as stage:
        config = save_snapshot(G, info, stage, "float32", trunc, source)
        G2, _ = load_generator(stage)
        err = 0.0
        for t in (None, 0.7):
            want, got = generate_images(G, CHECK_SEEDS, trunc=t), generate_images(G2, CHECK_SEEDS, trunc=t)
            err = max(err, float((want - got).abs().max()))
        if not err <= 1e-6:
            raise ExportError(f"the written export does not reproduce the imported generator (max |diff| {err:.3g})")
        os.makedirs(out, exist_ok=True)
        for name in (WEIGHTS, CONFIG):
            os.replace(os.path.join(stage, name), os.path.join(out, name))
    printer(f"read {src} ({source['written_by']}): StyleGAN2 G_ema, {imported.resolution}x{imported.resolution}, "
            f"{imported.channels} channel(s), {imported.c_dim} classes, "
            f"{sum(t.numel() for t in G.parameters()) / 1e6:.2f}M parameters; nothing in the file was run")
    printer(f"settings for fine-tuning from it (train.init_from={src}), "
            f"NVlabs ran the {imported.num_fp16_res} highest resolutions in fp16:")
    for n in notes:
        printer("  " + n)
    printer(f"wrote {out} (model.safetensors + config.json); bigtrain generate {out} --seeds 0-7 --out grid.png")
    return config

