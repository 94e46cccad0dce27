"""`bigtrain pack`: every source kind, round trips, labels, crash safety, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from bigtrain.data import open_shards, read_epoch
from bigtrain.data.pack import PackError, PackOptions, pack
from conftest import FASHION_MNIST, run_cli


def _npz(path, n=40, res=16, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, res, res) if channels == 1 else (n, res, res, channels)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    y = rng.integers(0, 5, n)
    np.savez(path, x=x, y=y)
    return x, y


def _read_all(out_dir, res, channels):
    shards = open_shards(str(out_dir))
    imgs, labels, keys = [], [], []
    for b in read_epoch(shards, 16, res, channels, with_keys=True):
        imgs.append(b["img"].numpy())
        labels.append(b["label"].numpy())
        keys += b["keys"]
    return np.concatenate(imgs), np.concatenate(labels), keys


@pytest.mark.parametrize("fmt", ["png", "raw"])
def test_round_trip_is_lossless(tmp_path, fmt):
    x, y = _npz(tmp_path / "d.npz", channels=3)
    m = pack(str(tmp_path / "d.npz"), str(tmp_path / "out"), PackOptions(16, shard_size=16, fmt=fmt, quality=100),
             progress=False)
    assert m["count"] == 40 and [s["count"] for s in m["shards"]] == [16, 16, 8] and m["channels"] == 3
    imgs, labels, keys = _read_all(tmp_path / "out", 16, 3)
    idx = np.array([int(k) for k in keys])  # keys are the source index
    assert sorted(idx.tolist()) == list(range(40))
    np.testing.assert_array_equal(imgs, x[idx].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(labels, y[idx])


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_lossy_round_trip_is_close_and_grayscale_stays_one_channel(tmp_path, fmt):
    # Smooth images, as photos are: lossy formats at q95 are close.
    g = np.linspace(0, 255, 16, dtype=np.float32)
    x = np.stack([np.add.outer(g, g * (i % 3)) / (1 + i % 3) for i in range(12)]).clip(0, 255).astype(np.uint8)
    np.savez(tmp_path / "g.npz", x=x)
    m = pack(str(tmp_path / "g.npz"), str(tmp_path / "out"), PackOptions(16, fmt=fmt), progress=False)
    assert m["channels"] == 1 and m["label_names"] == []
    imgs, labels, keys = _read_all(tmp_path / "out", 16, 1)
    assert imgs.shape == (12, 1, 16, 16) and (labels == -1).all()
    assert np.abs(imgs[:, 0].astype(int) - x[[int(k) for k in keys]]).mean() < 3


def test_fashion_mnist_idx_with_pad(tmp_path):
    m = pack(FASHION_MNIST, str(tmp_path / "fm"), PackOptions(32, shard_size=100, fit="pad", max_images=300,
                                                              workers=2), progress=False)
    assert m["count"] == 300 and len(m["shards"]) == 3 and m["label_names"][7] == "Sneaker"
    assert sum(m["class_counts"]) == 300
    imgs, labels, keys = _read_all(tmp_path / "fm", 32, 1)
    from bigtrain.data.arrays import _read_idx
    src = _read_idx(os.path.join(FASHION_MNIST, "train-images-idx3-ubyte.gz"))
    idx = [int(k) for k in keys]
    np.testing.assert_array_equal(imgs[:, 0, 2:30, 2:30], src[idx])  # centred, every pixel kept
    assert (imgs[:, :, :2] == 0).all() and (imgs[:, :, 30:] == 0).all()


def test_classes_select_by_name_or_index_before_max_images(tmp_path):
    """--classes 'Sandal,7' --max-images 50 via the CLI: the first 50 source images of those classes,
    keys and labels the source's, the kept names in the manifest; a class not in the source is named."""
    from bigtrain.data.arrays import _read_idx
    y = _read_idx(os.path.join(FASHION_MNIST, "train-labels-idx1-ubyte.gz"))
    out = tmp_path / "shoes"
    r = run_cli(["pack", FASHION_MNIST, str(out), "--resolution", "32", "--fit", "pad", "--classes", "Sandal,7",
                 "--max-images", "50", "--quiet"])
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "dataset.json").read_text())
    assert m["count"] == 50 and m["classes_kept"] == ["Sandal", "Sneaker"]
    _, labels, keys = _read_all(out, 32, 1)
    expected = [i for i in range(len(y)) if y[i] in (5, 7)][:50]
    assert sorted(int(k) for k in keys) == expected
    assert sorted(labels.tolist()) == sorted(y[expected].tolist()) and set(labels.tolist()) == {5, 7}
    r = run_cli(["pack", FASHION_MNIST, str(tmp_path / "x"), "--resolution", "32", "--classes", "Sandals"])
    assert r.returncode == 2 and "'Sandals' is neither a class" in r.stderr and not (tmp_path / "x").exists()


def _image_folder(root, classes=("cat", "dog"), per_class=6, size=(24, 20), mode="RGB"):
    rng = np.random.default_rng(1)
    for c in classes:
        os.makedirs(root / c, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).convert(mode).save(root / c / f"img{i}.png")


def test_folder_labels_from_subfolders_and_center_crop(tmp_path):
    _image_folder(tmp_path / "src")
    m = pack(str(tmp_path / "src"), str(tmp_path / "out"), PackOptions(16, shard_size=5), progress=False)
    assert m["label_names"] == ["cat", "dog"] and m["class_counts"] == [6, 6] and m["channels"] == 3
    imgs, labels, keys = _read_all(tmp_path / "out", 16, 3)
    assert imgs.shape == (12, 3, 16, 16)
    # Metadata says where each sample came from; the label matches its folder.
    shards = open_shards(str(tmp_path / "out"))
    with tarfile.open(shards.urls[0]) as t:
        meta = {os.path.splitext(n)[0]: json.load(t.extractfile(n)) for n in t.getnames() if n.endswith(".json")}
        cls = {os.path.splitext(n)[0]: int(t.extractfile(n).read()) for n in t.getnames() if n.endswith(".cls")}
    for k, info in meta.items():
        assert info["source"].split("/")[0] == ["cat", "dog"][cls[k]]


def test_labels_file_and_zip_source(tmp_path):
    _image_folder(tmp_path / "src", classes=("a",), per_class=4, mode="L")
    with open(tmp_path / "labels.csv", "w") as f:
        f.write("path,label\n" + "".join(f"a/img{i}.png,{'big' if i < 2 else 'small'}\n" for i in range(4)))
    m = pack(str(tmp_path / "src"), str(tmp_path / "o1"), PackOptions(16, labels=str(tmp_path / "labels.csv")),
             progress=False)
    assert m["label_names"] == ["big", "small"] and m["class_counts"] == [2, 2] and m["channels"] == 1
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
        for i in range(4):
            z.write(tmp_path / "src" / "a" / f"img{i}.png", f"x/{'p' if i % 2 else 'q'}/img{i}.png")
    m = pack(str(tmp_path / "imgs.zip"), str(tmp_path / "o2"), PackOptions(8, workers=2, shard_size=2),
             progress=False)
    assert m["count"] == 4 and m["label_names"] == ["x/p", "x/q"] and m["source_kind"] == "zip"
    with pytest.raises(PackError, match="no label for 1 of 4"):
        with open(tmp_path / "short.csv", "w") as f:
            f.write("".join(f"a/img{i}.png,x\n" for i in range(3)))
        pack(str(tmp_path / "src"), str(tmp_path / "o3"), PackOptions(16, labels=str(tmp_path / "short.csv")),
             progress=False)


def test_unreadable_source_image_is_skipped_and_reported(tmp_path):
    _image_folder(tmp_path / "src", classes=("a",), per_class=3)
    (tmp_path / "src" / "a" / "broken.png").write_bytes(b"not a png")
    msgs = []
    m = pack(str(tmp_path / "src"), str(tmp_path / "out"), PackOptions(16), progress=False, printer=msgs.append)
    assert m["count"] == 3 and m["skipped"] == 1
    assert any("broken.png" in s for s in msgs)


def test_bad_sources_error_and_write_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(PackError, match="does not exist"):
        pack(str(tmp_path / "nope"), str(out), PackOptions(16), progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(PackError, match="holds no images"):
        pack(str(tmp_path / "empty"), str(out), PackOptions(16), progress=False)
    with pytest.raises(PackError, match="power of two"):
        pack(str(tmp_path / "empty"), str(out), PackOptions(20), progress=False)
    assert not out.exists()
    r = run_cli(["pack", str(tmp_path / "nope"), str(out), "--resolution", "16"])
    assert r.returncode == 2 and "does not exist" in r.stderr and not out.exists()


def test_repacking_replaces_old_shards(tmp_path):
    _npz(tmp_path / "d.npz", n=40)
    pack(str(tmp_path / "d.npz"), str(tmp_path / "out"), PackOptions(16, shard_size=10), progress=False)
    (tmp_path / "out" / "train-000009.tar.tmp").write_bytes(b"left by a killed pack")
    m = pack(str(tmp_path / "d.npz"), str(tmp_path / "out"), PackOptions(16, shard_size=20), progress=False)
    assert sorted(os.listdir(tmp_path / "out")) == ["dataset.json", "train-000000.tar", "train-000001.tar"]
    assert len(m["shards"]) == 2


def test_killed_pack_leaves_no_complete_looking_partial_shard(tmp_path):
    """SIGKILL a real `bigtrain pack` mid-way: no manifest, and every .tar left is whole."""
    x = np.random.default_rng(0).integers(0, 256, (3000, 64, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "big.npz", x=x)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "bigtrain", "pack", str(tmp_path / "big.npz"), str(out),
                             "--resolution", "64", "--shard-size", "200", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and any(n.endswith(".tar") for n in os.listdir(out))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    names = os.listdir(out)
    assert "dataset.json" not in names
    done = [n for n in names if n.endswith(".tar")]
    assert done, "the pack was killed before finishing any shard; make the source bigger"
    for n in done:
        with tarfile.open(out / n) as t:
            assert len([m for m in t.getnames() if m.endswith(".png")]) == 200
    with pytest.raises(Exception, match="without dataset.json"):
        open_shards(str(out))
