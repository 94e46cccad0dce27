"""Metrics during training: values in stats.jsonl and TensorBoard at the configured interval,
the best FID kept as checkpoints/best.pt (the same number `bigtrain eval` gives for it), a best
snapshot refused as a resume point, and `bigtrain plot` drawing the curve."""
from __future__ import annotations

import json

import pytest

from conftest import FASHION_MNIST, run_cli, tiny_config, write_config

pytestmark = pytest.mark.slow  # InceptionV3 on the CPU: not in the fast tier


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train-metrics")
    cfg = tiny_config(tmp / "run", metrics={"names": ["fid8", "msssim4"], "interval_kimg": 0.032, "batch": 8,
                                            "cache": str(tmp / "cache")})
    r = run_cli(["train", write_config(tmp / "c.yaml", cfg)])
    assert r.returncode == 0, r.stderr
    return tmp / "run", r.stdout


def test_metrics_are_logged_at_each_interval_to_stats_and_tensorboard(run):
    run_dir, out = run
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    fid = [(r["kimg"], r["Metrics/fid8"]) for r in rows if "Metrics/fid8" in r]
    assert [k for k, _ in fid] == [0.032, 0.064]
    assert all(v > 0 for _, v in fid)
    share = [r["Timing/metrics_share"] for r in rows if "Timing/metrics_share" in r]
    assert len(share) == 2 and all(0 < s < 1 for s in share)
    ms = [r for r in rows if "Metrics/msssim4" in r]
    assert all(0 <= r["Metrics/msssim4"] <= 1 and 0 <= r["Metrics/msssim4_real"] <= 1 for r in ms)
    assert "evaluation is" in out and "% of this run's time" in out

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir)).Reload()
    events = acc.Scalars("Metrics/fid8")
    assert [e.step for e in events] == [32, 64]
    assert [pytest.approx(e.value, rel=1e-6) for e in events] == [v for _, v in fid]


def test_best_checkpoint_holds_the_lowest_fid_and_eval_reproduces_it(run, tmp_path):
    run_dir, _ = run
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    fid = {r["kimg"]: r["Metrics/fid8"] for r in rows if "Metrics/fid8" in r}
    best_kimg = min(fid, key=fid.get)
    summary = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert summary["metric"] == "fid8" and summary["kimg"] == best_kimg
    assert summary["value"] == pytest.approx(fid[best_kimg], rel=1e-9)

    best = run_dir / "checkpoints" / "best.pt"
    r = run_cli(["eval", str(best), "--data", FASHION_MNIST, "--metrics", "fid8", "--batch", "8", "--no-cache",
                 "--json", str(tmp_path / "m.json")])
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["fid8"] == pytest.approx(fid[best_kimg], rel=1e-6)

    r = run_cli(["generate", str(best), "--seeds", "0-3", "--out", str(tmp_path / "g.png")])
    assert r.returncode == 0 and (tmp_path / "g.png").is_file(), r.stderr

    cfg = tiny_config(tmp_path / "again")
    r = run_cli(["train", write_config(tmp_path / "c.yaml", cfg), "--resume", str(best)])
    assert r.returncode == 2 and "best-metric snapshot" in r.stderr and "ckpt-*.pt" in r.stderr


def test_plot_draws_the_fid_curve_and_names_a_missing_key(run, tmp_path):
    run_dir, _ = run
    png = tmp_path / "fid.png"
    r = run_cli(["plot", str(run_dir), "--out", str(png)])
    assert r.returncode == 0, r.stderr
    assert "2 points" in r.stdout and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run_cli(["plot", str(run_dir), "--key", "Metrics/fid10k", "--out", str(png)])
    assert r.returncode == 2 and "Metrics/fid8" in r.stderr


def test_missing_inception_weights_fail_before_training(tmp_path):
    cfg = tiny_config(tmp_path / "run", metrics={"names": ["fid8"], "inception": str(tmp_path / "nope.pt")})
    r = run_cli(["train", write_config(tmp_path / "c.yaml", cfg)])
    assert r.returncode == 2 and "nope.pt" in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
