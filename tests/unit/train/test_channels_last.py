"""train.channels_last: G's and D's weights and activations in the NHWC layout. It changes the
memory layout only, so training follows the NCHW run to rounding, checkpoints hold the same
weights, and a run can resume with the other layout."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli, tiny_config, write_config

from bigtrain.checkpoint.schema import Checkpoint


def _train(tmp_path: Path, name: str, channels_last: bool, **train) -> Path:
    cfg = tiny_config(tmp_path / name, train={"total_kimg": 0.032, "channels_last": channels_last, **train})
    r = run_cli(["train", write_config(tmp_path / f"{name}.yaml", cfg)])
    assert r.returncode == 0, r.stderr
    return tmp_path / name


def _losses(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k.startswith("Loss/")} for line in open(run / "stats.jsonl")]


def _last(run: Path) -> Checkpoint:
    return Checkpoint.read(str(sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1]))


@pytest.mark.slow  # two short CLI runs, about 12 s
def test_channels_last_trains_as_nchw_does_and_resumes_across_layouts(tmp_path):
    nchw, nhwc = _train(tmp_path, "nchw", False), _train(tmp_path, "nhwc", True)
    for a, b in zip(_losses(nchw), _losses(nhwc), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-4), k
    ca, cb = _last(nchw), _last(nhwc)
    for k, v in ca.G_ema.items():
        torch.testing.assert_close(cb.G_ema[k], v, rtol=1e-3, atol=1e-4)
    # The checkpoint holds the NHWC run's conv weights as they were trained...
    w = [v for v in cb.strategy["G"]["module"].values() if v.ndim == 4 and v.shape[1] > 1 and v.shape[-1] > 1]
    assert w and all(v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous() for v in w)
    # ...and an NCHW trainer resumes from it.
    cfg = tiny_config(nhwc, train={"total_kimg": 0.048, "channels_last": False})
    r = run_cli(["train", write_config(tmp_path / "resume.yaml", cfg)])
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stderr
    assert _last(nhwc).nimg == 48


def test_channels_last_puts_weights_reals_and_features_in_nhwc(tmp_path):
    from bigtrain.config import load_config
    from bigtrain.train.config import TrainConfig
    from bigtrain.train.loop import Trainer

    cfg = tiny_config(tmp_path / "run", train={"channels_last": True})
    cfg["data"] = {"source": "synthetic", "resolution": 16}  # RGB: a 1-channel image is NCHW and NHWC alike
    path = write_config(tmp_path / "c.yaml", cfg)
    trainer = Trainer(load_config(path, [], TrainConfig), config_source=path)
    G, D = trainer.wrapped["G"].raw, trainer.wrapped["D"].raw
    for net in (G, D, trainer.G_ema):
        convs = [p for p in net.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    reals = trainer._reals(4)["real_img"]
    assert reals.is_contiguous(memory_format=torch.channels_last) and not reals.is_contiguous()
    img = G(torch.randn(4, G.z_dim))
    assert img.is_contiguous(memory_format=torch.channels_last) and not img.is_contiguous()
