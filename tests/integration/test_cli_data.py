"""`bigtrain pack` then `bigtrain train` from shards, through the CLI: bad data in the stream
shows in TensorBoard and training goes on; too much bad data stops with exit code 4; a
resumed run continues; `bigtrain bench data` reports images/s."""
from __future__ import annotations

import json
import os

import pytest
from conftest import FASHION_MNIST, run_cli, tiny_config, write_config


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("fm16")
    r = run_cli(["pack", FASHION_MNIST, str(out), "--resolution", "16", "--shard-size", "64",
                 "--max-images", "512", "--workers", "2", "--quiet"])
    assert r.returncode == 0, r.stderr
    assert "packed 512 images (16x16x1, png, 10 classes) into 8 shard(s)" in r.stdout
    return out


def _copy(src, dst):
    os.makedirs(dst)
    for n in os.listdir(src):
        with open(os.path.join(src, n), "rb") as f, open(os.path.join(dst, n), "wb") as g:
            g.write(f.read())
    return dst


def test_train_from_shards_with_a_corrupt_shard_logs_counts_and_resumes(shards, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    data = _copy(shards, tmp_path / "data")
    for i in range(8):  # every shard truncated in its last tenth: whichever the stream draws is bad
        raw = (data / f"train-{i:06d}.tar").read_bytes()
        (data / f"train-{i:06d}.tar").write_bytes(raw[:len(raw) * 9 // 10])
    run_dir = tmp_path / "run"
    # 16 steps of 8 from shards of 64 (a worker reports a shard's losses with its next batch).
    cfg = tiny_config(run_dir, data={"source": str(data), "max_images": None, "workers": 1, "shuffle_buffer": 8,
                                     "max_bad_fraction": 0.5}, train={"total_kimg": 0.128})
    path = write_config(tmp_path / "c.yaml", cfg)
    r = run_cli(["train", path])
    assert r.returncode == 0, r.stderr
    assert "warning: data: train-00000" in r.stdout and "fewer than the manifest lists" in r.stdout
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    assert max(e.value for e in acc.Scalars("Data/bad_shards")) >= 1
    assert max(e.value for e in acc.Scalars("Data/bad_samples")) >= 1
    assert max(e.value for e in acc.Scalars("Data/samples_read")) >= 64
    # Resume to a longer budget from the same shards.
    r = run_cli(["train", path, "train.total_kimg=0.144"])
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and os.path.exists(run_dir / "checkpoints" / "ckpt-000000000144.pt")


def test_too_much_bad_data_exits_4_with_a_clear_error(shards, tmp_path):
    data = _copy(shards, tmp_path / "data")
    for i in range(1, 8):
        os.remove(data / f"train-{i:06d}.tar")
    cfg = tiny_config(tmp_path / "run", data={"source": str(data), "max_images": None, "workers": 0,
                                              "max_bad_fraction": 0.05})
    r = run_cli(["train", write_config(tmp_path / "c.yaml", cfg)])
    assert r.returncode == 4, r.stderr
    assert "data error" in r.stderr and "data.max_bad_fraction=0.05" in r.stderr


def test_every_shard_unreadable_or_no_manifest_is_a_data_error(shards, tmp_path):
    """Exit 4 with the reason, not a failure to draw the empty reals grid (exit 2) nor "no images"
    for a folder of tars whose pack did not finish."""
    data = _copy(shards, tmp_path / "data")
    for i in range(8):
        (data / f"train-{i:06d}.tar").write_bytes(b"not a tar at all" * 64)
    cfg = tiny_config(tmp_path / "run", data={"source": str(data), "max_images": None, "workers": 0})
    r = run_cli(["train", write_config(tmp_path / "c.yaml", cfg)])
    assert r.returncode == 4, r.stdout + r.stderr
    assert f"no image could be read from data.source={data} (8 shard(s))" in r.stderr and "train-00000" in r.stderr
    assert "Traceback" not in r.stderr and not os.path.exists(tmp_path / "run" / "checkpoints")

    os.remove(data / "dataset.json")  # what a pack killed before its last step leaves
    r = run_cli(["train", write_config(tmp_path / "c.yaml", cfg)])
    assert r.returncode == 4, r.stdout + r.stderr
    assert "holds 8 tar shard(s) but no dataset.json" in r.stderr and "train-{000000..000007}.tar" in r.stderr


def test_unmatched_pattern_fails_before_training(tmp_path):
    cfg = tiny_config(tmp_path / "run", data={"source": str(tmp_path / "none-{000..003}.tar"), "max_images": None})
    r = run_cli(["train", write_config(tmp_path / "c.yaml", cfg)])
    assert r.returncode == 4 and "none of its 4 shard paths exist" in r.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_bench_data_reports_images_per_second(shards, tmp_path):
    folder = tmp_path / "pngs"
    r = run_cli(["bench", "data", str(shards), "--workers", "1", "--batches", "4", "--warmup", "1", "--batch", "32",
                 "--folder", str(folder), "--export-folder", "--json", str(tmp_path / "b.json")])
    assert r.returncode == 0, r.stderr
    res = json.load(open(tmp_path / "b.json"))
    shards_row, folder_row = res["rows"]
    assert shards_row["loader"] == "shards" and folder_row["loader"] == "folder"
    assert shards_row["img_per_sec"] > 0 and folder_row["img_per_sec"] > 0 and folder_row["vs_folder"] == 1
    assert shards_row["images"] == 4 * 32 and len(os.listdir(folder)) == 512
    assert shards_row["stages_us_per_image"]["decode_us"] > 0
    assert "img/s" in r.stdout
