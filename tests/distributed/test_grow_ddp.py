"""Progressive growing under ddp and deepspeed in real torchrun processes (gloo): the
wrappers are rebuilt for each stage's parameters, so a resolution change neither errors on
unused parameters nor hangs, and 2 ranks x 4 still equal 1 rank x 8 across it."""
from __future__ import annotations

import pytest
from conftest import run_cli, run_torchrun, write_config
from test_ddp import TOL, _equiv_config, _final_state, _max_diff

pytestmark = pytest.mark.slow  # real torchrun processes: not in the fast tier


def _grow_config(run_dir, **train):
    # 8x8 for one step, the 16x16 fade-in (alpha 0, 0.5), then 16x16 at alpha 1: both kinds of
    # change in the parameters in use (D's 8x8 fromRGB joins, then leaves again).
    cfg = _equiv_config(run_dir, total_kimg=0.032, **train)
    cfg["grow"] = {"start_res": 8, "fade_kimg": 0.016, "stable_kimg": 0.008}
    cfg["log"]["tick_kimg"] = 0.008
    return cfg


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    d = tmp_path_factory.mktemp("grow1")
    r = run_cli(["train", write_config(d / "one.yaml", _grow_config(d / "one"))])
    assert r.returncode == 0, r.stderr
    assert "stage: 16x16 fading in" in r.stdout and "stage: 16x16, batch 8" in r.stdout
    return _final_state(d / "one")


def test_ddp_two_ranks_equal_one_across_a_resolution_change(tmp_path, one_rank):
    cfg = _grow_config(tmp_path / "two", batch_gpu=4)
    cfg["distributed"] = {"strategy": "ddp"}
    r = run_torchrun(2, ["train", write_config(tmp_path / "two.yaml", cfg)], timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "stage: 16x16 fading in" in r.stdout
    two = _final_state(tmp_path / "two")
    assert two["progress"]["nimg"] == one_rank["progress"]["nimg"] == 32
    for net in ("G", "D"):
        d = _max_diff(one_rank["strategy"][net]["module"], two["strategy"][net]["module"])
        assert d < TOL, f"{net} differs by {d}"
    assert _max_diff(one_rank["nets"]["G_ema"], two["nets"]["G_ema"]) < TOL


def test_deepspeed_grows_and_resumes_at_the_new_resolution(tmp_path):
    # ZeRO-2: gradient hooks on the parameters, the case a stale engine would break.
    cfg = _grow_config(tmp_path / "ds", batch_gpu=4)
    cfg["distributed"] = {"strategy": "deepspeed", "zero_stage": 2}
    path = write_config(tmp_path / "ds.yaml", cfg)
    r = run_torchrun(2, ["train", path], timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "stage: 16x16 fading in" in r.stdout and "stage: 16x16, batch 8" in r.stdout
    # The engines were rebuilt at each stage. The checkpoint at 24 images sits on a boundary: its
    # last step ran fading (16x16, alpha 0.5) and the next one is stable, with another parameter
    # set. It resumes into the engine it was saved from, then moves on to the next stage.
    ckpt = tmp_path / "ds" / "checkpoints" / "ckpt-000000000024.pt"
    r = run_torchrun(2, ["train", path, "--resume", str(ckpt), "train.total_kimg=0.040"], timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resumed from" in r.stdout and "stage: 16x16, batch 8 from kimg 0.024" in r.stdout
    assert _final_state(tmp_path / "ds")["progress"]["nimg"] == 40


def test_zero3_with_growing_is_refused_before_training(tmp_path):
    cfg = _grow_config(tmp_path / "run")
    cfg["loss"].update(r1_gamma=0.0, pl_weight=0.0)
    cfg["distributed"] = {"strategy": "deepspeed", "zero_stage": 3}
    r = run_cli(["train", write_config(tmp_path / "c.yaml", cfg)])
    assert r.returncode == 2 and "distributed.zero_stage" in r.stderr and "progressive growing" in r.stderr
