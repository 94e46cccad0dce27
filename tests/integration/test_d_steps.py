"""train.num_d_steps: D steps per G step, each on fresh reals, counted in nimg."""
from __future__ import annotations

import torch
from conftest import run_cli, tiny_config, write_config


def test_two_d_steps_per_g_step_count_every_real_image(tmp_path):
    cfg = tiny_config(tmp_path / "run", train={"num_d_steps": 2})
    r = run_cli(["train", write_config(tmp_path / "c.yaml", cfg)])
    assert r.returncode == 0, r.stderr
    state = torch.load(sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    # 64 real images at batch 8 with 2 D steps per iteration: 4 iterations, 8 D steps.
    assert state["progress"]["nimg"] == 64 and state["progress"]["step"] == 4
    d_state = state["strategy"]["D"]["optimizer"]["state"]
    g_state = state["strategy"]["G"]["optimizer"]["state"]
    d_steps = float(next(iter(d_state.values()))["step"])
    g_steps = float(next(iter(g_state.values()))["step"])
    # D: 8 main steps + lazy R1 every 2nd iteration (2); G: 4 main + 2 path-length steps.
    assert (d_steps, g_steps) == (10.0, 6.0)
