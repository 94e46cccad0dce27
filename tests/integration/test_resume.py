"""Exact resume: 2N steps straight == N steps, stop, resume, N steps, weight for weight."""
from __future__ import annotations

import os

import pytest
import torch
from conftest import tiny_config, write_config

from bigtrain.checkpoint import load_state
from bigtrain.config import ConfigError, load_config
from bigtrain.train.config import TrainConfig
from bigtrain.train.loop import Trainer


def _trainer(cfg_dict, tmp_path, name, resume=None, overrides=()):
    path = write_config(tmp_path / f"{name}.yaml", cfg_dict)
    cfg = load_config(path, list(overrides), TrainConfig)
    return Trainer(cfg, resume=resume, config_source=path)


def _assert_same_state(a: dict, b: dict, where: str = "") -> None:
    assert a.keys() == b.keys(), where
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, dict):
            _assert_same_state(va, vb, f"{where}.{k}")
        elif isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), f"{where}.{k} differs"
        elif isinstance(va, list) and va and isinstance(va[0], (dict, torch.Tensor)):
            for i, (x, y) in enumerate(zip(va, vb)):
                _assert_same_state({"_": x}, {"_": y}, f"{where}.{k}[{i}]")
        else:
            assert va == vb, f"{where}.{k}: {va!r} != {vb!r}"


def test_resume_is_exact(tmp_path):
    # 8 iterations of batch 8 (64 images); lazy R1 and path length fire every 2nd step.
    straight = _trainer(tiny_config(tmp_path / "straight"), tmp_path, "straight")
    straight.run()

    first = _trainer(tiny_config(tmp_path / "split", train={"total_kimg": 0.032}), tmp_path, "first")
    ckpt = first.run()
    assert first.progress.step == 4
    second = _trainer(tiny_config(tmp_path / "split"), tmp_path, "second", resume=ckpt)
    assert second.progress.nimg == 32
    second.run()

    a, b = straight.state_dict().to_state(), second.state_dict().to_state()
    assert a["progress"] == b["progress"] and a["progress"]["step"] == 8
    for key in ("nets", "strategy", "loss", "data"):
        _assert_same_state(a[key], b[key], key)
    # The run really trained: weights moved away from initialisation.
    init = _trainer(tiny_config(tmp_path / "init"), tmp_path, "init")
    g0 = init.wrapped["G"].raw.state_dict()
    g1 = straight.wrapped["G"].raw.state_dict()
    assert any(not torch.equal(g0[k], g1[k]) for k in g0)


def test_checkpoint_holds_full_training_state(tmp_path):
    t = _trainer(tiny_config(tmp_path / "run", train={"total_kimg": 0.016}), tmp_path, "c")
    path = t.run()
    state = load_state(path)
    assert set(state["strategy"]) == {"G", "D"}
    assert set(state["strategy"]["G"]) == {"module", "optimizer"}
    assert state["strategy"]["D"]["optimizer"]["state"], "optimizer moments are saved"
    assert "pl_mean" in state["loss"]
    assert len(state["rng"]) == 1 and set(state["rng"][0]) >= {"torch", "numpy", "python"}
    assert state["progress"]["nimg"] == 16 and state["data"]["cursor"] == 16
    assert state["config"]["generator"]["z_dim"] == 16
    assert state["model_info"] == {"family": "stylegan2", "resolution": 16, "channels": 1, "c_dim": 0,
                                   "label_names": []}


def test_resume_with_a_different_model_names_the_keys(tmp_path):
    t = _trainer(tiny_config(tmp_path / "run", train={"total_kimg": 0.016}), tmp_path, "a")
    path = t.run()
    other = tiny_config(tmp_path / "run", generator={"channel_max": 8})
    with pytest.raises(ConfigError) as e:
        _trainer(other, tmp_path, "b", resume=path)
    msg = str(e.value)
    assert "generator.channel_max" in msg and "16" in msg and "8" in msg and os.path.basename(path) in msg


def test_resume_may_change_schedule_keys(tmp_path):
    t = _trainer(tiny_config(tmp_path / "run", train={"total_kimg": 0.016}), tmp_path, "a")
    path = t.run()
    longer = _trainer(tiny_config(tmp_path / "run", train={"total_kimg": 0.032}, log={"tick_kimg": 0.008}),
                      tmp_path, "b", resume=path)
    assert longer.progress.nimg == 16
    longer.run()
    assert longer.progress.nimg == 32


def test_python_and_numpy_generators_are_seeded_from_run_seed(tmp_path):
    """Checkpoints save Python's and numpy's generator states; a run seeds them from run.seed too,
    so a draw from either is the same in every run of one config (and another seed changes it)."""
    import random

    import numpy as np
    draws = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        _trainer(tiny_config(tmp_path / name, run={"dir": str(tmp_path / name), "seed": seed}), tmp_path, name)
        draws.append((random.random(), float(np.random.random())))
    assert draws[0] == draws[1] and draws[0][0] != draws[2][0] and draws[0][1] != draws[2][1]


def test_a_resume_in_the_middle_of_a_tick_ends_that_tick_where_the_straight_run_does(tmp_path):
    """Stopped by a signal at 40 images (ticks of 16), resumed: ticks at 48 and 64 as straight,
    numbered 3 and 4, not at 56 (a tick restarted at the resume point)."""
    import json
    import signal

    from bigtrain.train.loop import Interrupted

    def ticks(run):
        rows = [json.loads(line) for line in open(run / "stats.jsonl")]
        return [(r["Progress/tick"], round(r["Progress/kimg"] * 1000)) for r in rows]

    straight = _trainer(tiny_config(tmp_path / "straight"), tmp_path, "straight")
    straight.run()
    first = _trainer(tiny_config(tmp_path / "split"), tmp_path, "first")
    step = first.train_step

    def stop_at_40(stats):
        step(stats)
        if first.progress.nimg == 40:
            first._signals.add(signal.SIGTERM)  # as the handler records a delivered SIGTERM
    first.train_step = stop_at_40
    with pytest.raises(Interrupted) as stop:
        first.run()
    first.strategy.teardown()
    second = _trainer(tiny_config(tmp_path / "split"), tmp_path, "second", resume=stop.value.checkpoint)
    second.run()
    assert ticks(tmp_path / "split") == ticks(tmp_path / "straight") == [(1, 16), (2, 32), (3, 48), (4, 64)]
