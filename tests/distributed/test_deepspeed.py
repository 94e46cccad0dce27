"""DeepSpeed ZeRO 0/1/2/3 on CPU with gloo, in real torchrun processes: 2 ranks x 4 equal
1 rank x 8 (lazy R1 and path length on, G_ema included), checkpoints resume at the same world
size and are refused, clearly, at another, and export like any other."""
from __future__ import annotations

import os

import pytest
from conftest import copy_run, run_cli, run_torchrun, write_config
from test_ddp import TOL, _equiv_config, _final_state, _max_diff, equiv_one_rank

pytestmark = pytest.mark.slow  # real torchrun processes and DeepSpeed engines: not in the fast tier


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return _final_state(equiv_one_rank(tmp_path_factory))


@pytest.fixture(scope="module")
def baseline_unregularized(tmp_path_factory):
    d = tmp_path_factory.mktemp("base0")
    cfg = _equiv_config(d / "one")
    cfg["loss"].update(r1_gamma=0.0, pl_weight=0.0)
    r = run_cli(["train", write_config(d / "one.yaml", cfg)])
    assert r.returncode == 0, r.stderr
    return _final_state(d / "one")


def _train_two_ranks(folder, stage):
    """2 ranks x 4 under ZeRO-`stage` into folder/ds: (the run dir, the torchrun result)."""
    cfg = _equiv_config(folder / "ds", batch_gpu=4)
    cfg["distributed"] = {"strategy": "deepspeed", "zero_stage": stage}
    if stage == 3:
        cfg["loss"].update(r1_gamma=0.0, pl_weight=0.0)
    r = run_torchrun(2, ["train", write_config(folder / "ds.yaml", cfg)])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return folder / "ds", r


@pytest.fixture(scope="module")
def zero2(tmp_path_factory):
    """The ZeRO-2 run, trained once: its comparison below and the resume test read it."""
    return _train_two_ranks(tmp_path_factory.mktemp("zero2"), 2)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stage_two_ranks_of_4_equal_one_rank_of_8(tmp_path, request, baseline, baseline_unregularized, stage):
    """ZeRO 0-2 with lazy R1 and path length; ZeRO-3 (which cannot take second-order
    gradients, see test below) with both off."""
    run_dir, r = request.getfixturevalue("zero2") if stage == 2 else _train_two_ranks(tmp_path, stage)
    if stage == 3:
        baseline = baseline_unregularized
    assert "2 rank(s) x 4 x 1 round(s)" in r.stdout
    # DeepSpeed's shared-memory all-reduce op (inference only) is neither compiled nor loaded on CPU.
    assert "shm_comm" not in r.stdout + r.stderr
    state = _final_state(run_dir)
    assert state["progress"]["nimg"] == 32 and state["strategy"]["G"]["zero_stage"] == stage
    ds_dir = run_dir / "checkpoints" / "ckpt-000000000032.ds"
    assert (ds_dir / "G").is_dir() and (ds_dir / "D").is_dir()
    # The engines' weights, read back through a resumed single-step-free load: compare G_ema
    # (kept by bigtrain, updated from gathered weights under ZeRO-3) and the trained nets.
    assert _max_diff(baseline["nets"]["G_ema"], state["nets"]["G_ema"]) < TOL
    weights = _engine_weights(run_dir, stage)
    for net in ("G", "D"):
        assert _max_diff(baseline["strategy"][net]["module"], weights[net]) < TOL, net
    if stage == 3:  # the most sharded checkpoint exports like any other (bigtrain keeps G_ema whole)
        _export_matches_checkpoint(run_dir, tmp_path / "export")


def _export_matches_checkpoint(run_dir, out):
    import torch

    import bigtrain
    from bigtrain.export.load import load_generator_from_checkpoint
    from bigtrain.models.sampling import generate_images
    r = run_cli(["export", str(run_dir), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    G, _ = bigtrain.load_generator(str(out))
    G_ckpt, _ = load_generator_from_checkpoint(str(run_dir))
    assert torch.equal(generate_images(G, list(range(4))), generate_images(G_ckpt, list(range(4))))


def _engine_weights(run_dir, stage) -> dict:
    """Full fp32 weights from the DeepSpeed checkpoint folders, with DeepSpeed's own tool."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    folder = run_dir / "checkpoints" / "ckpt-000000000032.ds"
    if stage == 0:
        import torch
        return {n: torch.load(folder / n / "state" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
                for n in ("G", "D")}
    return {n: get_fp32_state_dict_from_zero_checkpoint(str(folder / n), tag="state") for n in ("G", "D")}


def test_resume_same_world_and_clear_refusal_at_another(tmp_path, zero2):
    """The ZeRO-2 run above (a copy), resumed by 2 ranks, then refused by 1."""
    copy_run(zero2[0], tmp_path / "run")
    cfg = _equiv_config(tmp_path / "run", batch_gpu=4)
    cfg["distributed"] = {"strategy": "deepspeed", "zero_stage": 2}
    path = write_config(tmp_path / "c.yaml", cfg)
    r = run_torchrun(2, ["train", path, "train.total_kimg=0.048"])
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stderr[-3000:]
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "ckpt-000000000048.pt")
    # keep=2: the oldest checkpoint's .pt and its .ds folder were rotated out together.
    names = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    assert names == ["ckpt-000000000032.ds", "ckpt-000000000032.pt", "ckpt-000000000048.ds", "ckpt-000000000048.pt"]
    r = run_cli(["train", path, "train.total_kimg=0.064", "train.batch_gpu=null"])
    assert r.returncode == 2 and "written by 2 ranks and cannot be resumed by 1" in r.stderr


def test_zero3_with_second_order_regularizers_is_refused_before_training(tmp_path):
    cfg = _equiv_config(tmp_path / "run")
    cfg["distributed"] = {"strategy": "deepspeed", "zero_stage": 3}
    r = run_cli(["train", write_config(tmp_path / "c.yaml", cfg)])
    assert r.returncode == 2 and "distributed.zero_stage" in r.stderr and "second-order" in r.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_channels_last_under_deepspeed_is_refused_before_training(tmp_path):
    # DeepSpeed's flat buffers fail on channels_last weights (a view error deep in its engine).
    cfg = _equiv_config(tmp_path / "run")
    cfg["distributed"] = {"strategy": "deepspeed", "zero_stage": 2}
    cfg["train"]["channels_last"] = True
    r = run_cli(["train", write_config(tmp_path / "c.yaml", cfg)])
    assert r.returncode == 2 and "key 'train.channels_last'" in r.stderr and "single or ddp" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_bf16_autocast_under_zero2_trains_and_keeps_fp32_weights(tmp_path):
    cfg = _equiv_config(tmp_path / "run", batch_gpu=4)
    cfg["distributed"] = {"strategy": "deepspeed", "zero_stage": 2}
    cfg["train"]["precision"] = "bf16"
    r = run_torchrun(2, ["train", write_config(tmp_path / "c.yaml", cfg)])
    assert r.returncode == 0, r.stderr[-3000:]
    import torch
    state = _final_state(tmp_path / "run")
    assert state["progress"]["nimg"] == 32
    assert all(v.dtype == torch.float32 for v in state["nets"]["G_ema"].values() if v.is_floating_point())
    weights = _engine_weights(tmp_path / "run", 2)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights["G"].values())
