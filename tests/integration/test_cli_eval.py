"""`bigtrain eval` end to end with the real InceptionV3 weights: a table and JSON beside the
checkpoint, the real features cached (the second evaluation skips that pass), and the same
numbers from 2 ranks as from 1 (real torchrun processes, gloo)."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli, run_torchrun

METRICS = "fid24,kid24,pr24"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from conftest import tiny_config, write_config
    tmp = tmp_path_factory.mktemp("eval")
    cfg = tiny_config(tmp / "run")
    cfg["train"]["total_kimg"] = 0.032
    r = run_cli(["train", write_config(tmp / "c.yaml", cfg)])
    assert r.returncode == 0, r.stderr
    return tmp / "run" / "checkpoints" / "ckpt-000000000032.pt"


def test_eval_writes_a_table_and_json_and_caches_the_real_features(checkpoint, tmp_path):
    cache = tmp_path / "cache"
    args = ["eval", str(checkpoint), "--metrics", METRICS, "--batch", "8", "--cache", str(cache)]
    first = run_cli(args)
    assert first.returncode == 0, first.stderr
    for name in ("fid24", "kid24", "pr24_precision", "pr24_recall"):
        assert name in first.stdout
    assert "24 generated vs 24 real images (computed real features)" in first.stdout
    result = json.loads(checkpoint.with_suffix(".metrics.json").read_text())
    assert set(result["metrics"]) == {"fid24", "kid24", "pr24_precision", "pr24_recall"}
    assert result["metrics"]["fid24"] > 0 and 0 <= result["metrics"]["pr24_precision"] <= 1
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
    fourth = run_cli([*args[:3], "fid16", *args[4:], "--json", str(tmp_path / "m16.json")])
    assert fourth.returncode == 0 and "(computed real features)" in fourth.stdout, fourth.stderr
    assert len(list(cache.glob("real-*.pt"))) == 2


def test_two_ranks_give_the_numbers_one_rank_gives(checkpoint, tmp_path):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    base = ["eval", str(checkpoint), "--metrics", METRICS, "--batch", "8", "--no-cache"]
    r = run_cli([*base, "--json", str(one)])
    assert r.returncode == 0, r.stderr
    r = run_torchrun(2, [*base, "--json", str(two)])
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert b["world_size"] == 2 and a["world_size"] == 1
    assert a["metrics"] == b["metrics"]


def test_an_unknown_metric_is_refused_before_any_work(checkpoint):
    r = run_cli(["eval", str(checkpoint), "--metrics", "fid1k,fdi"])
    assert r.returncode == 2 and "unknown metric 'fdi'" in r.stderr
