"""`bigtrain eval` end to end with the real InceptionV3 weights: a table and JSON beside the
checkpoint, the real features cached (the second evaluation skips that pass), and the same
numbers from 2 ranks as from 1 (real torchrun processes, gloo)."""
from __future__ import annotations

import json

import pytest

from conftest import FASHION_MNIST, copy_run, run_cli, run_torchrun, tiny_config, train_once

pytestmark = pytest.mark.slow  # InceptionV3 on the CPU: not in the fast tier

METRICS = "fid8,kid8,pr8"  # InceptionV3 costs about 0.4 s per image on one CPU thread


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A copy of the shared tiny StyleGAN2 run (eval writes its JSON beside the checkpoint)."""
    run = copy_run(train_once(tmp_path_factory, "stylegan2-tiny", tiny_config), tmp_path_factory.mktemp("eval") / "run")
    return run / "checkpoints" / "ckpt-000000000064.pt"


@pytest.fixture(scope="module")
def first_eval(checkpoint, tmp_path_factory):
    """One rank, an empty real-feature cache: (the run, its JSON, the cache folder)."""
    cache = tmp_path_factory.mktemp("eval-cache") / "cache"
    r = run_cli(["eval", str(checkpoint), "--data", FASHION_MNIST, "--metrics", METRICS, "--batch", "8",
                 "--cache", str(cache)])
    assert r.returncode == 0, r.stderr
    return r, json.loads(checkpoint.with_suffix(".metrics.json").read_text()), cache


def test_eval_writes_a_table_and_json_and_caches_the_real_features(checkpoint, first_eval, tmp_path):
    first, result, cache = first_eval
    args = ["eval", str(checkpoint), "--metrics", METRICS, "--batch", "8", "--cache", str(cache), "--data", FASHION_MNIST]
    for name in ("fid8", "kid8", "pr8_precision", "pr8_recall"):
        assert name in first.stdout
    assert "8 generated vs 8 real images (computed real features)" in first.stdout
    assert set(result["metrics"]) == {"fid8", "kid8", "pr8_precision", "pr8_recall"}
    assert result["metrics"]["fid8"] > 0 and 0 <= result["metrics"]["pr8_precision"] <= 1
    assert result["inception"].endswith("default_1.pt")
    assert len(list(cache.glob("real-*.pt"))) == 1

    second = run_cli(args)
    assert second.returncode == 0, second.stderr
    assert "(cached real features)" in second.stdout
    again = json.loads(checkpoint.with_suffix(".metrics.json").read_text())
    assert again["metrics"] == result["metrics"]
    assert again["seconds"]["real"] < result["seconds"]["real"] / 3

    # The key is the images' content: the same images named by another path hit the cache;
    # another count of them does not.
    third = run_cli([*args, "--data", "/usr/share/datasets/fashion-mnist/", "--json", str(tmp_path / "m.json")])
    assert third.returncode == 0 and "(cached real features)" in third.stdout, third.stderr
    fourth = run_cli([*args[:3], "fid4", *args[4:], "--json", str(tmp_path / "m4.json")])
    assert fourth.returncode == 0 and "(computed real features)" in fourth.stdout, fourth.stderr
    assert len(list(cache.glob("real-*.pt"))) == 2


def test_two_ranks_give_the_numbers_one_rank_gives(checkpoint, first_eval, tmp_path):
    """Against the one-rank evaluation above (its cache only skips work: the test above shows the
    cached numbers equal the computed ones); both ranks compute their share of the real features."""
    _, one, _ = first_eval
    two = tmp_path / "two.json"
    r = run_torchrun(2, ["eval", str(checkpoint), "--data", FASHION_MNIST, "--metrics", METRICS, "--batch", "8", "--no-cache",
                         "--json", str(two)])
    assert r.returncode == 0, r.stderr[-3000:]
    b = json.loads(two.read_text())
    assert b["world_size"] == 2 and one["world_size"] == 1
    assert one["metrics"] == b["metrics"]


def test_an_unknown_metric_is_refused_before_any_work(checkpoint):
    r = run_cli(["eval", str(checkpoint), "--metrics", "fid1k,fdi"])
    assert r.returncode == 2 and "unknown metric 'fdi'" in r.stderr
