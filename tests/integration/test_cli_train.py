"""`bigtrain train / generate / bench` as a user runs them: real processes, real files."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import copy_run, run_cli, tiny_config, train_once, write_config
from PIL import Image

from bigtrain.checkpoint import load_state
from bigtrain.checkpoint.state import CheckpointManager
from bigtrain.config import load_config
from bigtrain.train.config import TrainConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny CLI run shared by the read-only tests below (and by other files): (run dir, stdout)."""
    run_dir = train_once(tmp_path_factory, "stylegan2-tiny", tiny_config)
    return run_dir, (run_dir.parent / "train.out").read_text()


def test_train_writes_checkpoints_config_samples_and_stats(trained):
    run_dir, stdout = trained
    ckpts = CheckpointManager(str(run_dir / "checkpoints"), 2).list()
    assert [os.path.basename(p) for p in ckpts] == ["ckpt-000000000048.pt", "ckpt-000000000064.pt"]  # keep=2
    assert "final checkpoint" in stdout
    # The resolved config in the run dir loads back to the same config.
    resolved = load_config(str(run_dir / "config.yaml"), [], TrainConfig)
    assert resolved.generator.z_dim == 16 and resolved.loss.r1_interval == 2
    assert (run_dir / "reals.png").exists()
    assert sorted(os.listdir(run_dir / "samples"))[0] == "fakes000000.png"
    lines = [json.loads(l) for l in open(run_dir / "stats.jsonl")]
    assert [round(l["kimg"], 3) for l in lines] == [0.016, 0.032, 0.048, 0.064]
    assert all(np.isfinite(l["Loss/G/main"]) and l["Timing/img_per_sec"] > 0 for l in lines)


def test_tensorboard_events_read_back(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run_dir, _ = trained
    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in ("Loss/G/main", "Loss/D/main", "Loss/D/r1", "Loss/G/pl", "Loss/scores/real", "Progress/kimg",
                "Timing/sec_per_kimg", "Timing/img_per_sec", "Resources/peak_mem_gb", "LR/G", "LR/D"):
        assert tag in scalars, tag
    kimg = [e.value for e in acc.Scalars("Progress/kimg")]
    assert kimg == pytest.approx([0.016, 0.032, 0.048, 0.064])
    # Lazy regularization rescales lr by interval / (interval + 1) = 2/3.
    assert acc.Scalars("LR/D")[0].value == pytest.approx(0.0025 * 2 / 3)
    images = acc.Tags()["images"]
    assert "Samples/fakes" in images and "Samples/reals" in images
    assert len(acc.Images("Samples/fakes")) == 5  # at start and at each of 4 ticks


def test_generate_grid_and_per_image_files_are_deterministic(trained, tmp_path):
    run_dir, _ = trained
    ckpt = CheckpointManager(str(run_dir / "checkpoints"), 2).latest()
    r1 = run_cli(["generate", ckpt, "--seeds", "0-8", "--trunc", "0.7", "--out", str(tmp_path / "a.png"),
                  "--outdir", str(tmp_path / "each")])
    assert r1.returncode == 0, r1.stderr
    r2 = run_cli(["generate", str(run_dir), "--seeds", "0-8", "--trunc", "0.7", "--out", str(tmp_path / "b.png")])
    assert r2.returncode == 0, r2.stderr
    a, b = np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png"))
    assert a.shape == (48, 48)  # 3x3 grid of 16x16 grayscale
    assert np.array_equal(a, b)
    assert sorted(os.listdir(tmp_path / "each"))[:2] == ["seed0000.png", "seed0001.png"]
    assert len(os.listdir(tmp_path / "each")) == 9
    # Different seeds give different images.
    tiles = a.reshape(3, 16, 3, 16).transpose(0, 2, 1, 3).reshape(9, 16, 16)
    assert len({t.tobytes() for t in tiles}) == 9


def test_generate_errors_are_plain(trained, tmp_path):
    run_dir, _ = trained
    r = run_cli(["generate", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.png")])
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["generate", str(run_dir), "--class", "3", "--out", str(tmp_path / "x.png")])
    assert r.returncode == 2 and "unconditional" in r.stderr


def test_rerun_resumes_and_reports_complete(trained, tmp_path):
    run_dir = copy_run(trained[0], tmp_path / "run")
    path = write_config(tmp_path / "tiny.yaml", tiny_config(run_dir))
    r = run_cli(["train", path])
    assert r.returncode == 0 and "already complete" in r.stdout
    r = run_cli(["train", path, "--resume", "none"])
    assert r.returncode == 2 and "already holds checkpoints" in r.stderr


def test_a_truncated_newest_checkpoint_is_named_and_passed_over(trained, tmp_path):
    run_dir = copy_run(trained[0], tmp_path / "run")
    newest, before = (run_dir / "checkpoints" / f"ckpt-{n:012d}.pt" for n in (64, 48))
    newest.write_bytes(newest.read_bytes()[:newest.stat().st_size // 3])  # as a full disk or a crash leaves it
    path = write_config(tmp_path / "tiny.yaml", tiny_config(run_dir))
    r = run_cli(["train", path, "train.total_kimg=0.056"])
    assert r.returncode == 0, r.stderr
    assert f"warning: checkpoint {newest} cannot be loaded safely" in r.stdout
    assert "renamed it ckpt-000000000064.pt.damaged and took the one before" in r.stdout
    assert f"resumed from {before} at kimg 0.048" in r.stdout
    damaged = f"{newest}.damaged"  # set aside: not "the newest" for later commands
    assert os.path.exists(damaged) and not newest.exists()
    r = run_cli(["train", path, "--resume", damaged])
    assert r.returncode == 2 and f"checkpoint {damaged} cannot be loaded safely" in r.stderr and "Traceback" not in r.stderr


def test_a_failed_checkpoint_write_ends_in_one_line_naming_the_newest_intact_checkpoint(tmp_path):
    """A write that the file system refuses, injected with RLIMIT_FSIZE (the process may write no
    file over 300 KB: the 450 KB checkpoint fails with EFBIG, as a full disk fails with ENOSPC)."""
    import resource
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run", train={"total_kimg": 0.016}))
    assert run_cli(["train", path]).returncode == 0
    good = tmp_path / "run" / "checkpoints" / "ckpt-000000000016.pt"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    r = subprocess.run([sys.executable, "-m", "bigtrain", "train", path, "train.total_kimg=0.064"], text=True,
                       capture_output=True, timeout=300, preexec_fn=limit,
                       env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    assert r.returncode == 8, r.stdout + r.stderr
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("bigtrain: I/O error, training stopped: File too large") and "ckpt-000000000032.pt" in err
    assert err.endswith(f"the newest intact checkpoint is {good} (resume from it once the cause is fixed)")
    assert sorted(os.listdir(good.parent)) == [good.name]  # no temp file left behind
    assert load_state(str(good))["progress"]["nimg"] == 16


def test_a_log_write_failing_between_checkpoints_checkpoints_then_stops_in_one_line(tmp_path):
    """The run's samples/ folder is replaced by a file mid-run (a folder gone; a full disk fails the
    same writes): the tick saves a checkpoint of the work since the last one, then stops."""
    cfg = tiny_config(tmp_path / "run", train={"total_kimg": 0.016}, log={"image_ticks": 1},
                      checkpoint={"interval_ticks": 4})
    path = write_config(tmp_path / "c.yaml", cfg)
    assert run_cli(["train", path]).returncode == 0
    samples = tmp_path / "run" / "samples"
    shutil.rmtree(samples)
    samples.write_text("not a folder")
    r = run_cli(["train", path, "train.total_kimg=0.064"])
    assert r.returncode == 8, r.stdout + r.stderr
    newest = tmp_path / "run" / "checkpoints" / "ckpt-000000000032.pt"  # not due until kimg 0.080: written for the fault
    assert r.stderr.strip() == (f"bigtrain: I/O error, training stopped: File exists: {samples}; the newest intact "
                                f"checkpoint is {newest} (resume from it once the cause is fixed)"), r.stderr
    assert load_state(str(newest))["progress"]["nimg"] == 32


@pytest.mark.parametrize("sig, when", [(signal.SIGTERM, "training "), (signal.SIGINT, "tick 2")])
def test_signal_writes_checkpoint_then_resume_continues(tmp_path, sig, when):
    """SIGINT once training is under way; SIGTERM as soon as the run announces itself, before its
    first sample grid and first step: either way one more step, a checkpoint, a clean exit."""
    cfg = tiny_config(tmp_path / "run", train={"total_kimg": 50}, checkpoint={"interval_ticks": 1000})
    path = write_config(tmp_path / "long.yaml", cfg)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "bigtrain", "train", path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith(when) or time.time() > deadline:
            break
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=120)
    text = "".join(out) + rest
    assert proc.returncode == 128 + sig, text
    ckpts = CheckpointManager(str(tmp_path / "run" / "checkpoints"), 3).list()
    assert len(ckpts) == 1, "no tick checkpoint was due: this one was written because of the signal"
    nimg = load_state(ckpts[0])["progress"]["nimg"]
    assert (nimg >= 32 if when == "tick 2" else nimg == 8) and nimg % 8 == 0
    assert f"received signal {int(sig)}" in text and f"checkpoint written to {ckpts[0]}" in text

    r = run_cli(["train", path, f"train.total_kimg={(nimg + 16) / 1000}"])
    assert r.returncode == 0, r.stderr
    assert f"resumed from {ckpts[0]} at kimg {nimg / 1000:.3f}" in r.stdout
    assert load_state(CheckpointManager(str(tmp_path / "run" / "checkpoints"), 3).latest())["progress"]["nimg"] == nimg + 16


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path):
    cfg = tiny_config(tmp_path / "run", train={"total_kimg": 50}, checkpoint={"interval_ticks": 1000})
    proc = subprocess.Popen([sys.executable, "-m", "bigtrain", "train", write_config(tmp_path / "c.yaml", cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + 120
    for line in proc.stdout:
        if line.startswith("tick 1") or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    for line in proc.stdout:  # the first Ctrl+C is acknowledged; the second one aborts the step
        if line.startswith("received signal"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted (Ctrl+C): stopped at once" in err or "checkpoint written to" in out  # or it had finished


def test_a_second_run_on_a_held_run_dir_fails_at_once_and_a_killed_run_frees_it(tmp_path):
    cfg = tiny_config(tmp_path / "run", train={"total_kimg": 50}, checkpoint={"interval_ticks": 1})
    path = write_config(tmp_path / "long.yaml", cfg)
    proc = subprocess.Popen([sys.executable, "-m", "bigtrain", "train", path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + 120
    for line in proc.stdout:
        if line.startswith("tick 1") or time.time() > deadline:
            break
    checkpoints = tmp_path / "run" / "checkpoints"
    r = run_cli(["train", path])
    assert r.returncode == 7, r.stdout + r.stderr
    assert f"run dir {tmp_path / 'run'} is in use by host" in r.stderr and f"pid {proc.pid} " in r.stderr
    assert "Traceback" not in r.stderr and "resumed" not in r.stdout
    assert proc.poll() is None  # the first run goes on

    proc.kill()  # SIGKILL: no handler runs, the kernel drops the lock
    proc.wait(timeout=60)
    newest = CheckpointManager(str(checkpoints), 2).latest()
    nimg = load_state(newest)["progress"]["nimg"]
    r = run_cli(["train", path, f"train.total_kimg={(nimg + 8) / 1000}"])
    assert r.returncode == 0 and f"resumed from {newest}" in r.stdout, r.stderr


def test_divergence_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path / "run", train={"total_kimg": 0.016, "max_nonfinite_steps": 3})
    path = write_config(tmp_path / "ok.yaml", cfg)
    assert run_cli(["train", path]).returncode == 0
    good = CheckpointManager(str(tmp_path / "run" / "checkpoints"), 3).latest()
    # Resumed with an absurd learning rate, the weights blow up to inf: a real divergence.
    r = run_cli(["train", path, "train.total_kimg=1", "train.g_lr=1e30", "train.d_lr=1e30", "log.tick_kimg=0.008"])
    assert r.returncode == 3, r.stdout + r.stderr
    assert "training diverged: 3 iterations in a row had a non-finite loss" in r.stderr
    assert "step skipped" in r.stdout
    assert f"the last good checkpoint is {good}" in r.stderr
    assert CheckpointManager(str(tmp_path / "run" / "checkpoints"), 3).list() == [good]  # nothing newer written
    import torch
    state = load_state(good)
    assert all(torch.isfinite(v).all() for v in state["nets"]["G_ema"].values() if v.is_floating_point())


def test_bench_train_prints_table_and_json(tiny, tmp_path):
    _, path = tiny
    r = run_cli(["bench", "train", path, "--iters", "2", "--warmup", "1", "--json", str(tmp_path / "b.json")])
    assert r.returncode == 0, r.stderr
    result = json.load(open(tmp_path / "b.json"))
    assert result["img_per_sec"] > 0 and result["iters"] == 2 and result["peak_mem_gb"] > 0
    assert "img_per_sec" in r.stdout and "sec_per_kimg" in r.stdout


def test_conditional_training_grid_and_generation(tmp_path):
    cfg = tiny_config(tmp_path / "run", data={"use_labels": True}, train={"total_kimg": 0.016},
                      log={"grid_size": 20})
    path = write_config(tmp_path / "cond.yaml", cfg)
    r = run_cli(["train", path])
    assert r.returncode == 0, r.stderr
    # Training grid: one row per class (10 classes x 2 seeds of 16x16).
    grid = np.asarray(Image.open(tmp_path / "run" / "samples" / "fakes000000.png"))
    assert grid.shape == (160, 32)
    # generate without --class: seed i gets class i mod 10, one column per class.
    r = run_cli(["generate", str(tmp_path / "run"), "--seeds", "0-19", "--out", str(tmp_path / "all.png")])
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "all.png")).shape == (32, 160)
    # --class picks one class; changing only the class changes the image for the same seed.
    imgs = []
    for cls in (3, 7):
        out = tmp_path / f"c{cls}.png"
        r = run_cli(["generate", str(tmp_path / "run"), "--seeds", "5", "--class", str(cls), "--out", str(out)])
        assert r.returncode == 0, r.stderr
        imgs.append(np.asarray(Image.open(out)))
    assert not np.array_equal(*imgs)
    r = run_cli(["generate", str(tmp_path / "run"), "--seeds", "5", "--class", "10", "--out", str(tmp_path / "x.png")])
    assert r.returncode == 2 and "out of range" in r.stderr


def test_overrides_may_follow_options(tiny, tmp_path):
    cfg, path = tiny
    r = run_cli(["config", path, "train.total_kimg=3"])
    assert r.returncode == 0 and "total_kimg: 3" in r.stdout
    r = run_cli(["train", path, "--resume", "none", "train.total_kimg=0.016", f"run.dir={tmp_path / 'r2'}"])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r2" / "checkpoints" / "ckpt-000000000016.pt").exists()
    r = run_cli(["train", path, "--resume", "none", "--bogus"])
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr


def test_tensorboard_curve_continues_across_a_resume_without_losing_the_checkpoint_tick(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = tiny_config(tmp_path / "run")
    cfg["train"]["total_kimg"] = 0.032
    path = write_config(tmp_path / "c.yaml", cfg)
    assert run_cli(["train", path]).returncode == 0
    r = run_cli(["train", path, "train.total_kimg=0.064"])
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stderr
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("Progress/kimg")] == [16, 32, 48, 64]
