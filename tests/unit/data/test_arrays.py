"""In-memory datasets (IDX, .npz, image folders) and the resumable, rank-sharded ArrayStream."""
import gzip
import os
import struct

import numpy as np
import pytest
import torch

from bigtrain.data import ArrayStream, DataConfig, ImageArray, load_images

FASHION = "/usr/share/datasets/fashion-mnist"


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx_pair(folder, images, labels=None, gz=False, split="train"):
    os.makedirs(folder, exist_ok=True)
    suffix = ".gz" if gz else ""
    opener = gzip.open if gz else open
    with opener(os.path.join(folder, f"{split}-images-idx3-ubyte{suffix}"), "wb") as f:
        f.write(idx_bytes(images))
    if labels is not None:
        with opener(os.path.join(folder, f"{split}-labels-idx1-ubyte{suffix}"), "wb") as f:
            f.write(idx_bytes(labels))
    return str(folder)


def sample_digits(n=6, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randint(1, 256, size=(n, 28, 28)).astype(np.uint8)  # no zeros: the border is easy to see
    y = (np.arange(n) % 10).astype(np.uint8)
    return x, y


# ---------------------------------------------------------------- loading

@pytest.mark.parametrize("gz", [False, True])
def test_idx_pad_centres_with_black_border(tmp_path, gz):
    x, y = sample_digits()
    src = write_idx_pair(tmp_path / "idx", x, y, gz=gz)
    data = load_images(DataConfig(source=src, resolution=32, fit="pad", use_labels=True))
    assert data.images.dtype == torch.uint8
    assert data.images.shape == (6, 1, 32, 32)
    assert torch.equal(data.images[:, 0, 2:30, 2:30], torch.from_numpy(x))
    border = data.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.sum() == 0
    assert torch.equal(data.labels, torch.from_numpy(y.astype(np.int64)))
    assert data.labels.dtype == torch.int64
    assert data.num_classes == 10 and data.label_names[0] == "0"


def test_idx_labels_are_dropped_unless_requested(tmp_path):
    x, y = sample_digits()
    data = load_images(DataConfig(source=write_idx_pair(tmp_path / "idx", x, y), use_labels=False))
    assert data.labels is None and data.num_classes == 0


def test_idx_split_and_max_images(tmp_path):
    x, y = sample_digits(n=6)
    folder = tmp_path / "idx"
    write_idx_pair(folder, x, y, split="train")
    write_idx_pair(folder, 255 - x[:3], y[:3], split="t10k")
    data = load_images(DataConfig(source=str(folder), split="t10k", resolution=32, use_labels=True))
    assert data.images.shape[0] == 3
    assert torch.equal(data.images[:, 0, 2:30, 2:30], torch.from_numpy(255 - x[:3]))
    data = load_images(DataConfig(source=str(folder), max_images=4, use_labels=True))
    assert data.images.shape[0] == 4 and data.labels.shape == (4,)


def test_idx_resize_gives_requested_resolution(tmp_path):
    x = np.full((3, 28, 28), 200, np.uint8)
    x[1] = 50
    src = write_idx_pair(tmp_path / "idx", x)
    data = load_images(DataConfig(source=src, resolution=32, fit="resize"))
    assert data.images.shape == (3, 1, 32, 32)
    assert data.images.dtype == torch.uint8
    # a flat image stays flat (no black border, values preserved)
    assert (data.images[0] == 200).all() and (data.images[1] == 50).all()
    small = load_images(DataConfig(source=src, resolution=16, fit="pad"))  # too big to pad -> resample
    assert small.images.shape == (3, 1, 16, 16)
    assert (small.images[0] == 200).all()


def test_truncated_idx_data_raises_clear_error(tmp_path):
    x, _ = sample_digits()
    folder = tmp_path / "idx"
    os.makedirs(folder)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(x)[:-100])
    with pytest.raises(ValueError, match="truncated") as ei:
        load_images(DataConfig(source=str(folder)))
    assert str(path) in str(ei.value)


def test_non_idx_file_is_rejected(tmp_path):
    folder = tmp_path / "idx"
    os.makedirs(folder)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="IDX"):
        load_images(DataConfig(source=str(folder)))


def test_idx_truncated_inside_header_raises_value_error(tmp_path):
    x, _ = sample_digits()
    folder = tmp_path / "idx"
    os.makedirs(folder)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(x)[:10])  # magic + 1.5 of the 3 dimension words
    with pytest.raises(ValueError, match="truncated"):
        load_images(DataConfig(source=str(folder)))


def test_truncated_gzip_idx_raises_value_error(tmp_path):
    x, _ = sample_digits()
    folder = tmp_path / "idx"
    os.makedirs(folder)
    comp = gzip.compress(idx_bytes(x))
    (folder / "train-images-idx3-ubyte.gz").write_bytes(comp[: len(comp) // 2])  # interrupted download
    with pytest.raises(ValueError):
        load_images(DataConfig(source=str(folder)))


def test_idx_image_label_count_mismatch_is_rejected(tmp_path):
    x, y = sample_digits(n=6)
    src = write_idx_pair(tmp_path / "idx", x, y[:5])
    with pytest.raises(ValueError):
        load_images(DataConfig(source=src, use_labels=True))


def test_npz_with_labels(tmp_path):
    x, y = sample_digits(n=5)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y.astype(np.int64))
    data = load_images(DataConfig(source=str(path), resolution=32, use_labels=True))
    assert data.images.shape == (5, 1, 32, 32)
    assert torch.equal(data.images[:, 0, 2:30, 2:30], torch.from_numpy(x))
    assert data.labels.tolist() == y.tolist()
    assert data.label_names == [str(i) for i in range(5)]


def test_npz_rgb_is_channels_first(tmp_path):
    x = np.zeros((2, 8, 8, 3), np.uint8)
    x[..., 0], x[..., 1], x[..., 2] = 10, 20, 30
    path = tmp_path / "rgb.npz"
    np.savez(path, x=x)
    data = load_images(DataConfig(source=str(path), resolution=8))
    assert data.images.shape == (2, 3, 8, 8)
    assert data.images[:, :, 0, 0].tolist() == [[10, 20, 30]] * 2


def test_use_labels_without_labels_errors(tmp_path):
    x, _ = sample_digits(n=3)
    path = tmp_path / "nolabels.npz"
    np.savez(path, x=x)
    assert load_images(DataConfig(source=str(path))).labels is None
    with pytest.raises(ValueError, match="use_labels"):
        load_images(DataConfig(source=str(path), use_labels=True))
    src = write_idx_pair(tmp_path / "idx", x)  # IDX without a labels file
    with pytest.raises(ValueError, match="use_labels"):
        load_images(DataConfig(source=src, use_labels=True))


def test_npz_without_x_or_wrong_dtype(tmp_path):
    p1 = tmp_path / "a.npz"
    np.savez(p1, images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="'x'"):
        load_images(DataConfig(source=str(p1)))
    p2 = tmp_path / "b.npz"
    np.savez(p2, x=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_images(DataConfig(source=str(p2)))


def test_missing_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        load_images(DataConfig(source=str(tmp_path / "nothere")))


def test_png_folder_with_class_subfolders_gets_labels(tmp_path):
    from PIL import Image
    root = tmp_path / "pngs"
    values = {"cats": [10, 20], "dogs": [200, 210, 220]}
    for cls, vals in values.items():
        os.makedirs(root / cls)
        for i, v in enumerate(vals):
            arr = np.full((8, 8, 3), v, np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    data = load_images(DataConfig(source=str(root), resolution=8, use_labels=True))
    assert data.images.shape == (5, 3, 8, 8)
    assert data.label_names == ["cats", "dogs"]
    assert data.num_classes == 2
    by_value = {int(img[0, 0, 0]): int(lbl) for img, lbl in zip(data.images, data.labels)}
    assert by_value == {10: 0, 20: 0, 200: 1, 210: 1, 220: 1}


def test_png_folder_without_subfolders_has_no_labels(tmp_path):
    from PIL import Image
    root = tmp_path / "flat"
    os.makedirs(root)
    for i in range(3):
        Image.fromarray(np.full((4, 4), 50 * i, np.uint8)).save(root / f"{i}.png")
    data = load_images(DataConfig(source=str(root), resolution=4))
    assert data.images.shape == (3, 1, 4, 4)
    with pytest.raises(ValueError, match="use_labels"):
        load_images(DataConfig(source=str(root), resolution=4, use_labels=True))


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Fashion-MNIST not installed")
def test_fashion_mnist():
    data = load_images(DataConfig(source=FASHION, resolution=32, max_images=100, use_labels=True))
    assert data.images.shape == (100, 1, 32, 32)
    assert data.label_names[0] == "T-shirt/top" and len(data.label_names) == 10
    assert data.labels.shape == (100,) and 0 <= int(data.labels.min()) and int(data.labels.max()) <= 9
    assert data.images[:, :, :2].sum() == 0 and data.images.max() > 0  # padded 28 -> 32


# ---------------------------------------------------------------- ArrayStream

def marked_array(n=12):
    """Image i holds i+1 in its left column only (so a flip is visible); label i."""
    imgs = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    for i in range(n):
        imgs[i, 0, :, 0] = i + 1
    return ImageArray(imgs, torch.arange(n), [str(i) for i in range(n)], "test")


def ids_and_flips(img, labels):
    left = img[:, 0, 0, 0].long()
    right = img[:, 0, 0, -1].long()
    ids = torch.where(left > 0, left, right) - 1
    assert torch.equal(ids, labels)  # images travel with their labels
    return ids.tolist(), (right > 0).tolist()


def test_ranks_see_disjoint_shards_covering_the_epoch():
    data = marked_array(12)
    seen = []
    for rank in range(2):
        s = ArrayStream(data, seed=3, rank=rank, world_size=2)
        img, lbl = s.next(6)
        ids, _ = ids_and_flips(img, lbl)
        seen.append(set(ids))
        assert len(ids) == 6 and len(set(ids)) == 6
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == set(range(12))


def test_stream_crosses_epoch_boundaries():
    s = ArrayStream(marked_array(12), seed=0)
    ids = []
    for _ in range(5):
        img, lbl = s.next(5)
        assert img.shape == (5, 1, 4, 4) and lbl.shape == (5,)
        ids += ids_and_flips(img, lbl)[0]
    assert sorted(ids[:12]) == list(range(12))
    assert sorted(ids[12:24]) == list(range(12))
    assert ids[:12] != ids[12:24]  # each epoch is freshly shuffled
    assert s.epoch == 2 and s.cursor == 1


def test_batch_larger_than_dataset():
    img, lbl = ArrayStream(marked_array(5), seed=0).next(12)
    ids, _ = ids_and_flips(img, lbl)
    assert len(ids) == 12 and set(ids) == set(range(5))


def test_xflip_flips_about_half_and_off_flips_none():
    data = marked_array(12)
    _, flips = ids_and_flips(*ArrayStream(data, seed=0, xflip=True).next(120))
    assert 30 < sum(flips) < 90
    _, flips = ids_and_flips(*ArrayStream(data, seed=0, xflip=False).next(120))
    assert not any(flips)


@pytest.mark.parametrize("xflip", [False, True])
@pytest.mark.parametrize("world_size, rank", [(1, 0), (2, 1)])
def test_resume_mid_epoch_gives_identical_batches(xflip, world_size, rank):
    data = marked_array(12)
    straight = ArrayStream(data, seed=7, rank=rank, world_size=world_size, xflip=xflip)
    straight.next(7 if world_size == 1 else 4)  # shard sizes are 12 and 6
    state = straight.state_dict()
    assert state["cursor"] != 0  # mid-epoch
    want = [straight.next(5) for _ in range(4)]  # crosses at least one epoch boundary

    resumed = ArrayStream(data, seed=7, rank=rank, world_size=world_size, xflip=xflip)
    resumed.load_state_dict(dict(state))
    got = [resumed.next(5) for _ in range(4)]
    for (wi, wl), (gi, gl) in zip(want, got):
        assert torch.equal(wi, gi) and torch.equal(wl, gl)


def test_resume_from_a_stream_that_already_ran():
    data = marked_array(12)
    a = ArrayStream(data, seed=1, xflip=True)
    a.next(7)
    state = a.state_dict()
    want = a.next(9)
    b = ArrayStream(data, seed=1, xflip=True)
    b.next(15)  # b has moved on: another epoch's order is cached
    assert b.epoch == 1
    b.load_state_dict(state)
    got = b.next(9)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


def test_different_seeds_give_different_orders():
    data = marked_array(12)
    a = ids_and_flips(*ArrayStream(data, seed=0).next(12))[0]
    b = ids_and_flips(*ArrayStream(data, seed=1).next(12))[0]
    a2 = ids_and_flips(*ArrayStream(data, seed=0).next(12))[0]
    assert a != b
    assert a == a2
