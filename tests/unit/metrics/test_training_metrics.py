"""The metrics config (shorthand, errors that name the key), MS-SSIM's scales, the stats.jsonl
reader behind `bigtrain plot`, and which best value a resumed run compares against."""
from __future__ import annotations

import json

import pytest
import torch

from bigtrain.config import ConfigError, build
from bigtrain.checkpoint.schema import Checkpoint
from bigtrain.metrics import measures
from bigtrain.metrics.plot import read_series
from bigtrain.metrics.training import MetricsConfig, TrainingMetrics
from bigtrain.train.config import TrainConfig


def test_a_list_is_short_for_names_and_bad_entries_name_the_key():
    cfg = build(TrainConfig, {"metrics": ["fid10k", "kid10k"]})
    assert cfg.metrics.names == ["fid10k", "kid10k"] and cfg.metrics.best_spec().name == "fid10k"
    with pytest.raises(ConfigError, match=r"run.yaml: key 'metrics.names'.*unknown metric 'fdi'"):
        build(TrainConfig, {"metrics": ["fid1k", "fdi"]}, sources="run.yaml")
    with pytest.raises(ConfigError, match=r"key 'metrics.best'.*fid or kid"):
        build(TrainConfig, {"metrics": {"names": ["pr1k", "fid1k"], "best": "pr1k"}})
    with pytest.raises(ConfigError, match=r"key 'metrics.best'.*must be one of"):
        build(TrainConfig, {"metrics": {"names": ["fid1k"], "best": "kid1k"}})
    assert build(TrainConfig, {"metrics": ["pr1k"]}).metrics.best_spec() is None


def test_msssim_uses_the_scales_that_fit_and_scores_identical_pairs_one():
    assert [measures.msssim_scales(r) for r in (16, 32, 64, 128, 256, 1024)] == [1, 2, 3, 4, 5, 5]
    with pytest.raises(ValueError, match="larger than 10 px"):
        measures.msssim_scales(8)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 1, 32, 32, generator=g) * 2 - 1
    assert measures.msssim_pairs(a, a) == pytest.approx(1.0, abs=1e-6)
    smooth = torch.nn.functional.avg_pool2d(a, 3, 1, 1)
    noise = torch.rand(6, 1, 32, 32, generator=g) * 2 - 1
    assert measures.msssim_pairs(a, smooth) > measures.msssim_pairs(a, noise) + 0.2


def test_read_series_drops_what_a_resumed_run_logged_again(tmp_path):
    rows = [{"kimg": 1, "m": 5.0}, {"kimg": 2, "m": 4.0}, {"kimg": 3, "m": 9.0},  # crash after kimg 3
            {"kimg": 2, "x": 0}, {"kimg": 3, "m": 3.0}, {"kimg": 4, "m": 2.0}]  # resumed from kimg 2
    (tmp_path / "stats.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"kimg\": 5, \"m\"")
    assert read_series(str(tmp_path), "m") == [(1, 5.0), (2, 4.0), (3, 3.0), (4, 2.0)]


def test_a_resumed_run_compares_against_the_best_kept_on_disk(tmp_path):
    m = TrainingMetrics(MetricsConfig(names=["msssim4", "kid50"], best="kid50"), None, None, "cpu", str(tmp_path))
    assert m.improves({"kid50": 9.0})
    (tmp_path / "checkpoints").mkdir()
    def best(metric, value):
        Checkpoint(kind="best", config={}, model_info={"family": "stylegan2", "resolution": 16, "channels": 1,
                                                       "c_dim": 0}, G_ema={}, progress={"nimg": 64},
                   best={"metric": metric, "value": value}).write(str(tmp_path / "checkpoints" / "best.pt"))
    best("kid50", 0.5)
    assert not m.improves({"kid50": 0.6}) and m.improves({"kid50": 0.4})
    best("fid50", 0.1)
    assert m.improves({"kid50": 0.6})  # another metric's best does not count
