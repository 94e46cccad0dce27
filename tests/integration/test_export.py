"""Export as a user runs it: `bigtrain export` of each family (a conditional StyleGAN2, a ProGAN
checkpoint taken mid fade-in, a BigGAN), then the export loaded with load_generator, run in ONNX
Runtime and TorchScript, and used by `bigtrain generate`, against the checkpoint's own G_ema; same
checkpoint -> same bytes; tampered or mismatched files refused; the StyleGAN2 extras."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_config, write_config
from PIL import Image
from test_grow import progan_config

import bigtrain
from bigtrain.export.load import load_generator_from_checkpoint
from bigtrain.models.sampling import generate_images

SEEDS = list(range(8))


def _train(tmp, name, cfg) -> str:
    r = run_cli(["train", write_config(tmp / f"{name}.yaml", cfg)])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return str(tmp / name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, biggan_run):
    """family -> (run dir or checkpoint, truncation used in the checks)."""
    tmp = tmp_path_factory.mktemp("export-runs")
    sg = tiny_config(tmp / "stylegan2", train={"total_kimg": 0.032})
    sg["data"]["use_labels"] = True  # conditional: the graphs take a class label
    pg = progan_config(tmp / "progan", train={"total_kimg": 0.024})  # ends in the 8x8 fade-in
    out = {"stylegan2": (_train(tmp, "stylegan2", sg), 0.7), "progan": (_train(tmp, "progan", pg), None),
           "biggan": (str(biggan_run), 1.0)}
    return out


def _images(G, trunc, seeds=SEEDS):
    torch.manual_seed(0)
    return generate_images(G, seeds, trunc=trunc)


def _inputs(G, family, seeds, trunc):
    """The graphs' inputs for these seeds, as bigtrain generate chooses them (class = seed mod classes)."""
    from bigtrain.models.sampling import latents_from_seeds
    feeds = {"z": latents_from_seeds(seeds, G.z_dim).numpy()}
    if G.c_dim:
        feeds["label"] = (np.array(seeds) % G.c_dim).astype(np.int64)
    if G.truncation_arg:
        off = 1.0 if family == "stylegan2" else 0.0
        feeds["trunc"] = np.array(off if trunc is None else trunc, dtype=np.float32)
    return feeds


@pytest.mark.filterwarnings("ignore:`torch.jit")
@pytest.mark.parametrize("family", ["stylegan2", "progan", "biggan"])
def test_export_reproduces_the_checkpoint_in_every_format(runs, family, tmp_path):
    run, trunc = runs[family]
    out = tmp_path / "export"
    r = run_cli(["export", run, "--out", str(out), "--format", "all"])
    assert r.returncode == 0, r.stderr
    assert "generator.onnx" in r.stdout and "max |diff|" in r.stdout
    assert sorted(os.listdir(out)) == ["checks.json", "config.json", "generator.onnx", "generator.torchscript.pt",
                                       "model.safetensors"]
    G_ckpt, info = load_generator_from_checkpoint(run)
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == family and config["resolution"] == 16 and config["c_dim"] == G_ckpt.c_dim
    assert config["source"]["checkpoint"] == os.path.abspath(info["checkpoint"])
    if family == "progan":  # exported mid-growth: the stage travels with it
        assert config["stage"]["resolution"] == 8 and config["stage"]["alpha"] < 1
    if family != "progan":
        assert len(config["label_names"]) == 10 and config["label_names"][0] == "T-shirt/top"

    # safetensors + config.json, rebuilt with no pickle: the same images, bit for bit.
    G, _ = bigtrain.load_generator(str(out))
    for t in (None, trunc) if trunc else (None,):
        assert torch.equal(_images(G, t), _images(G_ckpt, t))

    # ONNX Runtime and TorchScript, at a batch size other than the traced one, with truncation.
    import onnxruntime as ort
    seeds = list(range(5))
    want = _images(G_ckpt, trunc, seeds).numpy()
    feeds = _inputs(G_ckpt, family, seeds, trunc)
    sess = ort.InferenceSession(str(out / "generator.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(feeds)
    got = sess.run(["img"], feeds)[0]
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4
    ts = torch.jit.load(str(out / "generator.torchscript.pt"))
    got = ts(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
    assert np.abs(got - want).max() < 1e-4
    checks = json.loads((out / "checks.json").read_text())
    assert checks["onnx"]["max_abs_err"] < 1e-3 and checks["safetensors"]["max_abs_err"] == 0

    # bigtrain generate reads the export as it reads the checkpoint: the same PNG pixels.
    a, b = tmp_path / "from-export.png", tmp_path / "from-ckpt.png"
    assert run_cli(["generate", str(out), "--seeds", "0-7", "--out", str(a)]).returncode == 0
    assert run_cli(["generate", run, "--seeds", "0-7", "--out", str(b)]).returncode == 0
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


@pytest.mark.slow  # three exports with every format: about 20 s
def test_same_checkpoint_same_bytes_and_half_precision_halves_the_weights(runs, tmp_path):
    run, _ = runs["stylegan2"]
    digests = []
    for name in ("a", "b"):
        r = run_cli(["export", run, "--out", str(tmp_path / name), "--format", "all", "--trunc", "0.7"])
        assert r.returncode == 0, r.stderr
        digests.append({f: hashlib.sha256((tmp_path / name / f).read_bytes()).hexdigest()
                        for f in ("model.safetensors", "config.json", "generator.onnx", "generator.torchscript.pt")})
    assert digests[0] == digests[1]
    r = run_cli(["export", run, "--out", str(tmp_path / "half"), "--dtype", "float16"])
    assert r.returncode == 0, r.stderr
    full, half = (os.path.getsize(tmp_path / d / "model.safetensors") for d in ("a", "half"))
    assert half < 0.6 * full
    G_ckpt, _ = load_generator_from_checkpoint(run)
    G_half, config = bigtrain.load_generator(str(tmp_path / "half"))
    assert config["dtype"] == "float16" and next(G_half.parameters()).dtype == torch.float32
    err = (_images(G_half, None) - _images(G_ckpt, None)).abs().max().item()
    assert 0 < err < 0.05
    # bigtrain bench generate times each runtime the export holds, on the same inputs.
    r = run_cli(["bench", "generate", str(tmp_path / "a"), "--batch", "4", "--rounds", "1", "--json",
                 str(tmp_path / "bench.json")])
    assert r.returncode == 0, r.stderr
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert set(bench["img_per_sec"]) == {"pytorch", "torchscript", "onnxruntime"}
    assert all(v > 0 for v in bench["img_per_sec"].values()) and bench["vs_pytorch"]["pytorch"] == 1
    # The export's --trunc is bigtrain generate's default for it.
    r = run_cli(["generate", str(tmp_path / "a"), "--seeds", "0-3", "--out", str(tmp_path / "t.png")])
    assert r.returncode == 0 and "truncation 0.7" in r.stdout
    r = run_cli(["generate", str(tmp_path / "a"), "--seeds", "0-3", "--no-trunc", "--out", str(tmp_path / "n.png")])
    assert r.returncode == 0 and "truncation" not in r.stdout
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "t.png")), np.asarray(Image.open(tmp_path / "n.png")))
    # Re-exported into the same folder without graphs: the old graphs go, the config says so.
    assert run_cli(["export", run, "--out", str(tmp_path / "a")]).returncode == 0
    assert not (tmp_path / "a" / "generator.onnx").exists() and not (tmp_path / "a" / "generator.torchscript.pt").exists()
    assert json.loads((tmp_path / "a" / "config.json").read_text())["files"] == {}


@pytest.fixture(scope="module")
def _export_once(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("export-once") / "export"
    assert run_cli(["export", runs["stylegan2"][0], "--out", str(out)]).returncode == 0
    return out


@pytest.fixture
def export(_export_once, tmp_path):
    """A fresh copy of one StyleGAN2 export, for a test to edit."""
    return shutil.copytree(_export_once, tmp_path / "export")


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for k, v in changes.items():
        if "." in k:
            a, b = k.split(".")
            config[a][b] = v
        else:
            config[k] = v
    path.write_text(json.dumps(config))


def _error(folder) -> str:
    with pytest.raises(ValueError) as e:
        bigtrain.load_generator(str(folder))
    return str(e.value)


def test_mismatched_or_tampered_files_are_refused(export, runs, tmp_path):
    cfg = json.loads((export / "config.json").read_text())
    _edit_config(export, **{"generator.channel_max": 8})
    msg = _error(export)
    assert "config.json" in msg and "model.safetensors" in msg and "shape" in msg
    _edit_config(export, **{"generator.channel_max": cfg["generator"]["channel_max"], "family": "stylegan3"})
    msg = _error(export)
    assert "key 'family'" in msg and "'stylegan3'" in msg and "biggan, progan, stylegan2" in msg
    _edit_config(export, family="stylegan2", generator={**cfg["generator"], "w_dimm": 16})
    assert "generator.w_dimm" in _error(export)
    _edit_config(export, generator=cfg["generator"], w_avg=[0.0] * len(cfg["w_avg"]))
    assert "key 'w_avg' does not match" in _error(export)
    _edit_config(export, w_avg=cfg["w_avg"])
    for key, bad in (("resolution", 1048576), ("resolution", 24), ("resolution", 0), ("channels", 300),
                     ("c_dim", -1), ("resolution", True)):
        _edit_config(export, **{key: bad})
        assert f"key '{key}' must be" in _error(export), (key, bad)
        _edit_config(export, **{key: cfg[key]})
    bigtrain.load_generator(str(export))  # restored: loads again

    # Weights from another export beside this config.json: the recorded SHA-256 catches it.
    other = tmp_path / "other"
    assert run_cli(["export", runs["stylegan2"][0], "--out", str(other), "--dtype", "bfloat16"]).returncode == 0
    (export / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    assert "SHA-256 differs" in _error(export)
    # The CLI says the same in plain words, exit 2.
    r = run_cli(["generate", str(export), "--seeds", "0", "--out", str(tmp_path / "x.png")])
    assert r.returncode == 2 and "SHA-256 differs" in r.stderr and "Traceback" not in r.stderr


def test_a_pickle_in_place_of_the_weights_cannot_run_code(export, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = pickle.dumps({"weights": Evil()})
    (export / "model.safetensors").write_bytes(blob)
    _edit_config(export, **{"weights.sha256": hashlib.sha256(blob).hexdigest()})
    msg = _error(export)
    assert "not a readable safetensors file" in msg
    assert not marker.exists()


def test_stylegan2_style_mixing_and_interpolation(export, tmp_path):
    G, _ = bigtrain.load_generator(str(export))
    # Mixing every layer from the row seed gives the row seed's own image in each cell.
    out = tmp_path / "mix"
    r = run_cli(["generate", str(export), "--seeds", "0-1", "--style-mix", "5-7", "--mix-layers", f"0-{G.num_ws - 1}",
                 "--outdir", str(out), "--out", str(tmp_path / "mix.png")])
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(out)) == 3 * 4
    for row in (0, 1):
        own = np.asarray(Image.open(out / f"row-seed{row:04d}.png"))
        for col in (5, 6, 7):
            cell = np.asarray(Image.open(out / f"mix-row{row:04d}-col{col:04d}.png"))
            assert np.abs(cell.astype(np.int16) - own).max() <= 1  # other batch, same image: rounding at most
    # Coarse layers only (the default 0-3): the column's w with the row's first four layers.
    out2 = tmp_path / "mix2"
    assert run_cli(["generate", str(export), "--seeds", "0", "--style-mix", "5", "--outdir", str(out2)]).returncode == 0
    cell = np.asarray(Image.open(out2 / "mix-row0000-col0005.png")).astype(np.int16)
    from bigtrain.models.sampling import _synthesize, _ws
    with torch.no_grad():
        w_row, w_col = _ws(G, [0], None, None, "cpu"), _ws(G, [5], None, None, "cpu")
        w_col[:, :4] = w_row[:, :4]
        want = ((_synthesize(G, w_col, 1)[0, 0].clamp(-1, 1) + 1) * 127.5).round().numpy()
    assert np.abs(cell - want).max() <= 1
    assert not np.array_equal(cell, np.asarray(Image.open(out2 / "row-seed0000.png")))
    assert not np.array_equal(cell, np.asarray(Image.open(out2 / "col-seed0005.png")))

    # A walk through seeds 0 -> 3 -> 9 in 4 steps a leg: 9 frames, starting and ending on the seeds' images.
    frames = tmp_path / "frames"
    r = run_cli(["generate", str(export), "--seeds", "0,3,9", "--interp", "4", "--outdir", str(frames)])
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(frames)) == [f"frame{i:04d}.png" for i in range(9)]
    single = tmp_path / "single"
    assert run_cli(["generate", str(export), "--seeds", "0,3,9", "--outdir", str(single)]).returncode == 0
    for frame, seed in ((0, 0), (4, 3), (8, 9)):
        a = np.asarray(Image.open(frames / f"frame{frame:04d}.png")).astype(np.int16)
        b = np.asarray(Image.open(single / f"seed{seed:04d}.png")).astype(np.int16)
        assert np.abs(a - b).max() <= 1  # fused vs per-sample modulation: rounding at most


def test_a_graph_outside_tolerance_is_not_written(runs, tmp_path, monkeypatch):
    from bigtrain.export import ExportError, export_generator, run
    monkeypatch.setitem(run.TOLERANCE, "float32", 0.0)  # ONNX differs from PyTorch by ~1e-6: now too much
    with pytest.raises(ExportError, match="ONNX Runtime does not reproduce"):
        export_generator(runs["stylegan2"][0], str(tmp_path / "x"), ["safetensors", "onnx"], printer=lambda s: None)
    assert not (tmp_path / "x").exists()
    # A failed re-export into a folder holding an export leaves that export as it was.
    export_generator(runs["stylegan2"][0], str(tmp_path / "x"), ["safetensors"], printer=lambda s: None)
    before = {f: (tmp_path / "x" / f).read_bytes() for f in os.listdir(tmp_path / "x")}
    monkeypatch.setitem(run.TOLERANCE, "float16", 0.0)
    with pytest.raises(ExportError, match="load_generator does not reproduce"):
        export_generator(runs["stylegan2"][0], str(tmp_path / "x"), ["safetensors"], dtype="float16",
                         printer=lambda s: None)
    assert {f: (tmp_path / "x" / f).read_bytes() for f in os.listdir(tmp_path / "x")} == before
    assert sorted(os.listdir(tmp_path)) == ["x"]  # no staging folder left behind


def test_weights_path_in_config_is_not_followed(export, tmp_path):
    secret = tmp_path / "elsewhere.safetensors"
    secret.write_bytes((export / "model.safetensors").read_bytes())
    _edit_config(export, **{"weights.file": str(secret)})
    assert "key 'weights.file' must be 'model.safetensors'" in _error(export)


def test_bad_requests_fail_clearly(runs, export, tmp_path):
    r = run_cli(["export", runs["biggan"][0], "--out", str(tmp_path / "b"), "--trunc", "0"])
    assert r.returncode == 2 and "threshold must be > 0" in r.stderr
    r = run_cli(["export", str(export), "--out", str(export)])
    assert r.returncode == 2 and "is the export being read" in r.stderr
    r = run_cli(["generate", str(export), "--seeds", "0", "--style-mix", "1", "--class", "12", "--out", str(tmp_path / "x.png")])
    assert r.returncode == 2 and "--class 12 is out of range" in r.stderr
    r = run_cli(["export", runs["progan"][0], "--out", str(tmp_path / "p"), "--trunc", "0.7"])
    assert r.returncode == 2 and "no truncation trick" in r.stderr
    r = run_cli(["export", runs["progan"][0], "--out", str(tmp_path / "p"), "--format", "onnx,tflite"])
    assert r.returncode == 2 and "--format onnx,tflite" in r.stderr
    r = run_cli(["generate", runs["biggan"][0], "--seeds", "0-3", "--style-mix", "4-5", "--out", str(tmp_path / "x.png")])
    assert r.returncode == 2 and "needs a StyleGAN2 generator" in r.stderr
    r = run_cli(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p")])
    assert r.returncode == 2 and "nowhere" in r.stderr


def test_export_refuses_the_run_dir_and_clears_a_killed_exports_staging(runs, tmp_path):
    run = runs["stylegan2"][0]
    for out in (run, os.path.join(run, "checkpoints")):
        r = run_cli(["export", run, "--out", out])
        assert r.returncode == 2 and "is a run dir or holds checkpoints" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(run, "config.json"))
    # A staging folder whose export was killed (its process is gone) is cleared by the next export
    # to the same --out; one whose process lives is left alone.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    import re
    import socket
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
    stale, live = tmp_path / f"e.staging-{host}-{gone.pid}", tmp_path / f"e.staging-{host}-{os.getpid()}"
    elsewhere = tmp_path / f"e.staging-otherhost-{gone.pid}"  # another host's PID: not judged here
    for folder in (stale, live, elsewhere):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half written")
    r = run_cli(["export", run, "--out", str(tmp_path / "e")])
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and live.exists() and elsewhere.exists()
