"""Progressive growing end to end: exact resume in the middle of a fade-in, what a user sees
(console, TensorBoard resolution/alpha, full-size grids, generate), and the optimizer keeping
its state across a resolution change."""
from __future__ import annotations

import pytest
import torch
from conftest import run_cli, tiny_config, write_config
from PIL import Image
from test_resume import _assert_same_state, _trainer

PROGAN = {"model": "progan", "generator": {"z_dim": 16, "channel_base": 128, "channel_max": 16},
          "discriminator": {"channel_base": 128, "channel_max": 16}}


def progan_config(run_dir, **sections) -> dict:
    """ProGAN 4 -> 8 -> 16 on the tiny data: one step of 16 at 4x4, then 16-image fade-ins and
    stable phases at batch 8 (alpha 0 and 0.5 in each fade)."""
    cfg = tiny_config(run_dir, loss={"type": "wgan", "gp_weight": 10.0, "drift": 0.001, "r1_gamma": 0.0,
                                     "pl_weight": 0.0, "style_mixing_prob": 0.0, "augment": []},
                      train={"total_kimg": 0.072, "batch_size": 8, "ema_halflife_kimg": 0.01},
                      grow={"start_res": 4, "fade_kimg": 0.016, "stable_kimg": 0.016, "batch_size": {"4": 16},
                            "g_lr": {"16": 0.0005}},
                      log={"tick_kimg": 0.008, "grid_size": 4, "progress_bar": False})
    cfg.update(PROGAN)
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def stylegan2_config(run_dir, **sections) -> dict:
    return tiny_config(run_dir, grow={"start_res": 8, "fade_kimg": 0.016, "stable_kimg": 0.016},
                       log={"tick_kimg": 0.008, "grid_size": 4, "progress_bar": False}, **sections)


@pytest.mark.parametrize("make", [progan_config, stylegan2_config], ids=["progan", "stylegan2"])
def test_resume_in_the_middle_of_a_fade_in_is_exact(tmp_path, make):
    # Stop after 24 images, half way through the first fade-in, and resume.
    straight = _trainer(make(tmp_path / "straight"), tmp_path, "straight")
    straight.run()
    first = _trainer(make(tmp_path / "split", train={"total_kimg": 0.024}), tmp_path, "first")
    ckpt = first.run()
    second = _trainer(make(tmp_path / "split"), tmp_path, "second", resume=ckpt)
    # The resumed run is wrapped for the stage its checkpoint's last step ran at (alpha 0 at 16
    # images); its first step continues at alpha 0.5, half way through the fade-in.
    assert second.stage == first.stage and second.stage.alpha == 0.0
    assert second.wrapped["D"].raw.alpha == second.G_ema.alpha == 0.0
    assert second._stage_at(second.progress.nimg).alpha == 0.5
    second.run()
    a, b = straight.state_dict().to_state(), second.state_dict().to_state()
    assert a["progress"] == b["progress"] and straight.stage.resolution == 16
    for key in ("nets", "strategy", "loss", "data"):
        _assert_same_state(a[key], b[key], key)


def test_optimizer_keeps_state_and_gains_new_parameters(tmp_path):
    t = _trainer(progan_config(tmp_path / "run", train={"total_kimg": 0.016}), tmp_path, "a")
    t.run()  # one step of 16 at 4x4
    opt = t.wrapped["G"].optimizer
    G = t.wrapped["G"].raw
    b4 = G.blocks["b4"].conv1.weight
    assert opt.state[b4]["step"] == 1 and G.blocks["b8"].conv1.weight not in opt.state
    moment = opt.state[b4]["exp_avg_sq"].clone()
    t.cfg.train.total_kimg = 0.024
    t.run()  # into the 8x8 fade-in: same optimizer, b8 joins
    assert t.stage.resolution == 8 and t.stage.fading
    assert opt is t.wrapped["G"].optimizer
    assert opt.state[b4]["step"] == 2 and not torch.equal(opt.state[b4]["exp_avg_sq"], moment)
    assert opt.state[G.blocks["b8"].conv1.weight]["step"] == 1
    assert G.blocks["b16"].conv1.weight not in opt.state


def test_cli_growing_run_logs_stages_and_keeps_grid_size(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = progan_config(tmp_path / "run", checkpoint={"keep": 10})
    r = run_cli(["train", write_config(tmp_path / "p.yaml", cfg)])
    assert r.returncode == 0, r.stderr
    assert "stage: 8x8 fading in, batch 8 from kimg 0.016" in r.stdout
    assert "stage: 16x16 fading in, batch 8 from kimg 0.048" in r.stdout and "res 16  alpha 1.000" in r.stdout
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    res = [e.value for e in acc.Scalars("Progress/resolution")]
    alpha = [e.value for e in acc.Scalars("Progress/alpha")]
    batch = [e.value for e in acc.Scalars("Progress/batch_size")]
    # One tick per 8 images; each shows the stage of its last step.
    assert res == [4, 8, 8, 8, 8, 16, 16, 16]
    assert alpha == [1, 0, 0.5, 1, 1, 0, 0.5, 1]
    assert batch == [16, 8, 8, 8, 8, 8, 8, 8]
    assert [e.value for e in acc.Scalars("LR/G")] == pytest.approx([0.001] * 5 + [0.0005] * 3)
    assert [e.value for e in acc.Scalars("LR/D")] == pytest.approx([0.001] * 8)
    # Every grid has the full size: 2x2 images of 16x16 (+ 2px padding), whatever the stage.
    sizes = {Image.open(p).size for p in sorted((tmp_path / "run" / "samples").iterdir())}
    assert len(sizes) == 1
    # generate works on ProGAN checkpoints, from the run dir and from a mid-growth checkpoint.
    out = tmp_path / "g.png"
    r = run_cli(["generate", str(tmp_path / "run"), "--seeds", "0-3", "--out", str(out)])
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == sizes.pop()
    mid = tmp_path / "run" / "checkpoints" / "ckpt-000000000024.pt"  # at 8x8, alpha 0.5
    r = run_cli(["generate", str(mid), "--seeds", "0-3", "--outdir", str(tmp_path / "each")])
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "each" / "seed0000.png").size == (16, 16)
    r = run_cli(["generate", str(tmp_path / "run"), "--seeds", "0", "--trunc", "0.7", "--out", str(out)])
    assert r.returncode != 0 and "no truncation" in r.stderr


@pytest.mark.parametrize("override, message", [
    ("grow.start_res=4", "the stylegan2 discriminator can start at 8 at the lowest"),
    ("grow.start_res=16", "must be below the data resolution 16"),
    ("grow.batch_size={8: 6}", "grow.batch_size.8=6 must equal world_size=1 x train.batch_gpu=4"),
])
def test_bad_schedules_fail_before_training(tiny, override, message):
    _, path = tiny
    extra = ["train.batch_gpu=4"] if "batch_size" in override else []
    r = run_cli(["train", path, "grow.start_res=8", override, *extra])
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "tick" not in r.stdout
