"""The shard loader on real tars: other tools' shards, rank/worker splits, determinism,
resume randomness, and every kind of bad data."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from bigtrain.data import DataConfig, DataError, open_data, open_shards, read_epoch
from bigtrain.data.pack import PackOptions, pack
from bigtrain.data.shards import ShardStream


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """64 labelled 8x8 gray images in 8 shards of 8; pixel [0, 0] holds the sample index."""
    d = tmp_path_factory.mktemp("packed")
    x = np.random.default_rng(0).integers(0, 256, (64, 8, 8), dtype=np.uint8)
    x[:, 0, 0] = np.arange(64)
    np.savez(d / "d.npz", x=x, y=np.arange(64) % 4)
    pack(str(d / "d.npz"), str(d / "out"), PackOptions(8, shard_size=8, fmt="png"), progress=False)
    return d / "out", x


def _stream(shards, **kw) -> ShardStream:
    args = dict(resolution=8, channels=1, fit="resize", seed=0, rank=0, world_size=1, xflip=False, workers=0,
                shuffle_buffer=16, max_bad_fraction=0.0, chunk=8)
    args.update(kw)
    return ShardStream(shards, **args)


def test_reads_gnu_tar_and_webdataset_writer_shards(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    # GNU tar over files named key.ext
    src = tmp_path / "files"
    src.mkdir()
    for i, a in enumerate(imgs[:3]):
        (src / f"s{i}.png").write_bytes(_png(a))
        (src / f"s{i}.cls").write_text(str(i))
    subprocess.run(["tar", "cf", str(tmp_path / "gnu-0.tar"), "-C", str(src), *sorted(os.listdir(src))], check=True)
    # webdataset's own writer
    with wds.ShardWriter(str(tmp_path / "wds-%d.tar"), maxcount=10) as w:
        for i, a in enumerate(imgs[3:]):
            w.write({"__key__": f"w{i}", "png": Image.fromarray(a), "cls": i + 3})
    for pattern, expect_idx, tol in ((str(tmp_path / "gnu-{0..0}.tar"), [0, 1, 2], 0),
                                     (str(tmp_path / "wds-0.tar"), [3, 4, 5], 0)):
        shards = open_shards(pattern)
        assert shards.manifest is None and shards.channels == 3 and shards.resolution == 8
        batches = list(read_epoch(shards, 8, 8, 3))
        got = torch.cat([b["img"] for b in batches]).numpy()
        labels = torch.cat([b["label"] for b in batches]).tolist()
        assert labels == expect_idx
        assert np.abs(got.astype(int) - imgs[expect_idx].transpose(0, 3, 1, 2)).mean() <= tol


def test_two_ranks_two_workers_epoch_is_disjoint_and_complete(packed, tmp_path):
    """Real processes: 2 ranks (separate interpreters), each with 2 DataLoader workers."""
    out, _ = packed
    script = textwrap.dedent(f"""
        import json, sys
        from bigtrain.data import open_shards, read_epoch
        rank = int(sys.argv[1])
        keys = []
        for b in read_epoch(open_shards({str(out)!r}), 3, 8, 1, rank=rank, world_size=2, workers=2, with_keys=True):
            keys += b["keys"]
        print(json.dumps(keys))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r)], stdout=subprocess.PIPE, text=True)
             for r in (0, 1)]
    keys = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(keys[0]) == len(keys[1]) == 32  # 8 shards -> 2 per (rank, worker)
    assert not set(keys[0]) & set(keys[1])
    assert sorted(keys[0] + keys[1]) == [f"{i:09d}" for i in range(64)]


def test_resampled_stream_is_deterministic_and_resume_draws_fresh_samples(packed):
    out, x = packed
    shards = open_shards(str(out))
    a, b = _stream(shards), _stream(shards)
    first = [a.next(12)[0] for _ in range(4)]
    assert all(torch.equal(u, b.next(12)[0]) for u in first)
    other_seed = _stream(shards, seed=1)
    assert not torch.equal(torch.cat(first), torch.cat([other_seed.next(12)[0] for _ in range(4)]))
    # Resume: the restart counter moves on, so the stream does not replay its opening samples.
    resumed = _stream(shards)
    resumed.load_state_dict(a.state_dict())
    assert resumed.state_dict()["restart"] == 1
    assert not torch.equal(torch.cat(first), torch.cat([resumed.next(12)[0] for _ in range(4)]))
    # Labels travel with pixels: pixel [0, 0] is the index, label = index % 4.
    img, lbl = a.next(40)
    assert torch.equal(lbl, img[:, 0, 0, 0].long() % 4)


def test_batches_within_one_loaded_chunk_are_slices_of_it_not_copies(packed):
    # On a GPU the loader's chunks are in pinned memory; a batch sliced from one goes to the device
    # from there, where a copy would have to be pinned again first.
    out, x = packed
    s, ref = _stream(open_shards(str(out)), chunk=8), _stream(open_shards(str(out)), chunk=8)
    a, b = s.next(4)[0], s.next(4)[0]  # the two halves of the first chunk
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    c = s.next(8)[0]  # a whole chunk, the next one
    assert c.untyped_storage().data_ptr() != a.untyped_storage().data_ptr()
    # The same samples as batches that span chunks (which are copied together).
    assert torch.equal(torch.cat([a, b, c]), torch.cat([ref.next(6)[0], ref.next(10)[0]]))


def test_ranks_draw_different_samples_in_training(packed):
    out, _ = packed
    shards = open_shards(str(out))
    r0, r1 = _stream(shards, rank=0, world_size=2), _stream(shards, rank=1, world_size=2)
    assert not torch.equal(r0.next(16)[0], r1.next(16)[0])


def _corrupt_copy(out, tmp_path, name):
    """A copy of the packed dataset for one corruption case."""
    dst = tmp_path / name
    dst.mkdir()
    for n in os.listdir(out):
        (dst / n).write_bytes((out / n).read_bytes())
    return dst


def test_corrupt_data_is_skipped_counted_and_logged(packed, tmp_path):
    out, _ = packed
    d = _corrupt_copy(out, tmp_path, "bad")
    # 1. a missing shard, 2. a truncated tar, 3. an undecodable image, 4. a sample with no image.
    os.remove(d / "train-000001.tar")
    data = (d / "train-000002.tar").read_bytes()
    (d / "train-000002.tar").write_bytes(data[:len(data) // 2 + 100])
    with wds.TarWriter(str(d / "train-000003.tar")) as w:
        for i in range(8):
            sample = {"__key__": f"x{i}", "cls": b"1"}
            if i == 0:
                sample["png"] = b"\x89PNG garbage"
            elif i == 1:
                sample["txt"] = b"no image here"
            else:
                sample["png"] = _png(np.full((8, 8), 200, np.uint8))
            w.write(sample)
    shards = open_shards(str(d))
    logged = []
    s = _stream(shards, max_bad_fraction=0.5, printer=logged.append)
    s.log.burst = 10_000  # see every message here; the rate limit has its own test
    for _ in range(40):
        s.next(16)
    st = s.stats()
    assert st["Data/bad_shards"] >= 2 and st["Data/bad_samples"] >= 10
    text = "\n".join(logged)
    assert "train-000001.tar" in text and "train-000002.tar" in text
    assert "sample x0" in text and "cannot decode" in text and "sample x1" in text and "no image member" in text
    assert "BytesIO" not in text  # PIL's repr of its input said nothing; the sample key does
    # Epoch mode counts exactly: 8 lost (missing) + 8 - readable (truncated) + 2 (bad samples).
    total_good = total_bad = 0
    for b in read_epoch(shards, 16, 8, 1):
        total_good += len(b["img"])
        total_bad += b["bad"]
    assert total_good + total_bad == 64 and total_bad >= 10


def test_too_many_failures_stop_with_a_clear_error(packed, tmp_path):
    out, _ = packed
    d = _corrupt_copy(out, tmp_path, "mostly_missing")
    for i in range(1, 8):
        os.remove(d / f"train-{i:06d}.tar")
    s = _stream(open_shards(str(d)), max_bad_fraction=0.2)
    with pytest.raises(DataError, match=r"could not be read .*data.max_bad_fraction=0.2"):
        for _ in range(100):
            s.next(16)


def test_unmatched_or_empty_sources_error_before_training(tmp_path, packed):
    with pytest.raises(DataError, match="none of its 3 shard paths exist"):
        open_shards(str(tmp_path / "nothing-{000..002}.tar"))
    with pytest.raises(DataError, match="is empty"):
        open_shards("")
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match="without dataset.json"):
        open_shards(str(tmp_path / "half"))
    cfg = DataConfig(source=str(tmp_path / "x-{0..3}.tar"), resolution=8)
    with pytest.raises(DataError, match="data.source="):
        open_data(cfg, seed=0)
    out, _ = packed
    # Unlabelled shards cannot drive a conditional model.
    np.savez(tmp_path / "u.npz", x=np.zeros((4, 8, 8), np.uint8))
    pack(str(tmp_path / "u.npz"), str(tmp_path / "u"), PackOptions(8), progress=False)
    with pytest.raises(DataError, match="no class labels"):
        open_data(DataConfig(source=str(tmp_path / "u"), resolution=8, use_labels=True), seed=0)


def test_pipe_urls_and_on_the_fly_resize(packed):
    out, x = packed
    shards = open_shards(f"pipe:cat {out}/train-00000{{0..1}}.tar", manifest=str(out / "dataset.json"))
    assert len(shards.urls) == 2 and shards.label_names == ["0", "1", "2", "3"]
    got = torch.cat([b["img"] for b in read_epoch(shards, 8, 4, 1)])
    assert got.shape == (16, 1, 4, 4)
    # A failing pipe command is a bad shard, not a crash.
    shards = open_shards(f"pipe:cat {out}/train-000000.tar::pipe:exit 3", manifest=str(out / "dataset.json"))
    batches = list(read_epoch(shards, 8, 8, 1))
    assert sum(len(b["img"]) for b in batches) == 8 and sum(b["bad_shards"] for b in batches) == 1


def test_data_source_through_the_trainer_interface(packed):
    out, x = packed
    src = open_data(DataConfig(source=str(out), resolution=8, use_labels=True, workers=1, xflip=True), seed=3)
    assert (src.resolution, src.channels, src.num_classes) == (8, 1, 4)
    img, lbl = src.next(20)
    assert img.dtype == torch.uint8 and img.shape == (20, 1, 8, 8) and lbl.shape == (20,)
    assert src.preview(10).shape == (10, 1, 8, 8)
    assert src.class_probs().tolist() == [16, 16, 16, 16]
    src.close()


def test_warnings_are_rate_limited():
    from bigtrain.data.shards import RateLimitedLog
    out = []
    log = RateLimitedLog(out.append, burst=3, interval=3600)
    for i in range(50):
        log(f"m{i}")
    assert len(out) == 3
    log.last -= 3600
    log("late")
    assert len(out) == 4 and "47 similar messages suppressed" in out[-1]
