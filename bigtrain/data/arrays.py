"""Small datasets held in memory: IDX files (MNIST / Fashion-MNIST), a .npz of uint8
images, or a folder of image files. Streaming sharded datasets of any size is the
WebDataset path; this one is for datasets that fit in RAM (60k 32x32 images = 61 MB).

The stream is exactly resumable: each epoch's order comes from (seed, epoch) alone and
the position is (epoch, cursor), so a resumed run continues with the same samples a
straight run would have seen.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import re
import struct
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from bigtrain.config import require
from bigtrain.data.images import IMAGE_FILE_EXTS as IMAGE_EXTS
FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@dataclasses.dataclass
class DataConfig:
    source: str = "/usr/share/datasets/fashion-mnist"  # Shards: a folder written by `bigtrain pack`, tar URLs ('d/train-{000000..000011}.tar', 'pipe:CMD'). In memory: a folder of IDX files, a .npz with uint8 'x' (and 'y'), or a folder of images. synthetic: random RGB images, for benchmarks (a pool of 64, or max_images; with use_labels, random labels among 1000 classes).
    split: Literal["train", "t10k"] = "train"  # Which IDX split to read from an IDX folder.
    resolution: int = 32  # Training resolution (power of two); images are fitted to it by `fit`.
    fit: Literal["pad", "resize"] = "pad"  # pad: centre on a black canvas (28 -> 32 keeps every pixel); resize: area/bilinear resample.
    xflip: bool = True  # Random horizontal flips (x-flip augmentation).
    use_labels: bool = False  # Condition G and D on class labels.
    max_images: int | None = None  # Use only the first N images; null = all (in-memory sources only).
    workers: int = 2  # Shards: DataLoader worker processes per rank that read and decode; 0 = in the training process.
    shuffle_buffer: int = 1000  # Shards: samples each worker shuffles over (memory: this many decoded images per worker).
    max_bad_fraction: float = 0.01  # Shards: stop with an error when more than this fraction of samples cannot be read.
    manifest: str | None = None  # Shards: path of dataset.json; null = beside the first local shard.

    def __post_init__(self):
        r = self.resolution
        require(r >= 4 and r & (r - 1) == 0, "resolution", r, "must be a power of two >= 4")
        require(self.max_images is None or self.max_images >= 1, "max_images", self.max_images, "must be >= 1 or null")
        require(self.workers >= 0, "workers", self.workers, "must be >= 0")
        require(self.shuffle_buffer >= 1, "shuffle_buffer", self.shuffle_buffer, "must be >= 1")
        require(0 <= self.max_bad_fraction <= 1, "max_bad_fraction", self.max_bad_fraction, "must be in [0, 1]")


@dataclasses.dataclass
class ImageArray:
    images: torch.Tensor  # uint8 [N, C, R, R]
    labels: torch.Tensor | None  # int64 [N]
    label_names: list[str]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.label_names) if self.labels is not None else 0


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError) as e:  # a truncated download, or not gzip at all
        raise ValueError(f"{path} is truncated or not valid gzip: {e}") from None
    if len(data) < 4 or len(data) < 4 + 4 * data[3]:
        raise ValueError(f"{path} is truncated: {len(data)} bytes is shorter than an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {arr.size} bytes")
    return arr.reshape(shape)


def _find(folder: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    return None


def _load_raw(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    src = cfg.source
    if os.path.isdir(src):
        img_path = _find(src, f"{cfg.split}-images-idx3-ubyte")
        if img_path:
            x = _read_idx(img_path)
            lbl_path = _find(src, f"{cfg.split}-labels-idx1-ubyte")
            y = _read_idx(lbl_path) if lbl_path else None
            names = FASHION_MNIST_LABELS if "fashion" in src.lower() else [str(i) for i in range(10)]
            return x, y, names
        return _load_folder(src)
    if src.endswith(".npz") and os.path.isfile(src):
        with np.load(src) as z:
            if "x" not in z:
                raise ValueError(f"data.source={src}: .npz must hold 'x' (uint8 images); found {list(z.keys())}")
            x = z["x"]
            y = z["y"] if "y" in z else None
        if x.dtype != np.uint8:
            raise ValueError(f"data.source={src}: 'x' must be uint8, got {x.dtype}")
        names = [str(i) for i in range(int(y.max()) + 1)] if y is not None else []
        return x, y, names
    hint = (" Install Fashion-MNIST with: apt-get install dataset-fashion-mnist"
            if "fashion-mnist" in src else "")
    raise FileNotFoundError(f"data.source={src} does not exist or is not a dataset folder/.npz.{hint}")


def _load_folder(folder: str) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    from PIL import Image
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.lower().endswith(IMAGE_EXTS))
    if not files:
        tars = sorted(f for f in os.listdir(folder) if f.endswith(".tar"))
        if tars:  # shards without the manifest `bigtrain pack` writes last: a pack that did not finish
            from bigtrain.data.shards import DataError
            a, b = re.fullmatch(r"(.*?)(\d+)\.tar", tars[0]), re.fullmatch(r"(.*?)(\d+)\.tar", tars[-1])
            same = a and b and a[1] == b[1] and len(a[2]) == len(b[2])
            pattern = os.path.join(folder, f"{a[1]}{{{a[2]}..{b[2]}}}.tar" if same else tars[0])
            raise DataError(f"data.source={folder} holds {len(tars)} tar shard(s) but no dataset.json, which "
                            f"`bigtrain pack` writes last: an unfinished pack? Pack again, or name the shards "
                            f"themselves, e.g. data.source='{pattern}'")
        raise FileNotFoundError(f"data.source={folder} holds no IDX files and no images ({', '.join(IMAGE_EXTS)})")
    classes = sorted({os.path.relpath(os.path.dirname(f), folder) for f in files})
    use_cls = len(classes) > 1
    imgs = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("L" if im.mode in ("L", "I", "1") else "RGB")
            imgs.append(np.asarray(im))
    shapes = {i.shape for i in imgs}
    if len(shapes) > 1:
        raise ValueError(f"data.source={folder}: images differ in size {sorted(shapes)[:3]}...; "
                         "pack them to one resolution first")
    y = np.array([classes.index(os.path.relpath(os.path.dirname(f), folder)) for f in files]) if use_cls else None
    return np.stack(imgs), y, (classes if use_cls else [])


def load_images(cfg: DataConfig) -> ImageArray:
    x, y, names = _load_raw(cfg)
    if y is not None and len(y) != len(x):
        raise ValueError(f"data.source={cfg.source}: {len(x)} images but {len(y)} labels")
    if cfg.max_images is not None:
        x = x[:cfg.max_images]
        y = y[:cfg.max_images] if y is not None else None
    t = torch.from_numpy(np.array(x, copy=True))  # frombuffer arrays are read-only
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)  # -> NCHW
    t = fit_resolution(t, cfg.resolution, cfg.fit)
    labels = torch.from_numpy(y.astype(np.int64)) if (y is not None and cfg.use_labels) else None
    if cfg.use_labels and y is None:
        raise ValueError(f"data.use_labels=true but data.source={cfg.source} has no labels")
    return ImageArray(t.contiguous(), labels, names if labels is not None else [], cfg.source)


def fit_resolution(img_NCHW: torch.Tensor, res: int, fit: str) -> torch.Tensor:
    H, W = img_NCHW.shape[2:]
    if (H, W) == (res, res):
        return img_NCHW
    if fit == "pad" and H <= res and W <= res:
        top, left = (res - H) // 2, (res - W) // 2
        return F.pad(img_NCHW, [left, res - W - left, top, res - H - top])
    # Centre-crop to square, then resample (area when shrinking avoids aliasing).
    s = min(H, W)
    y0, x0 = (H - s) // 2, (W - s) // 2
    sq = img_NCHW[:, :, y0:y0 + s, x0:x0 + s].float()
    mode = "area" if s > res else "bilinear"
    out = F.interpolate(sq, size=(res, res), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return out.round().clamp(0, 255).to(torch.uint8)


class ArrayStream:
    """Infinite, shuffled, rank-sharded batches from an ImageArray; exactly resumable.

    Each epoch is a permutation drawn from (seed, epoch); rank r of R takes every R-th index
    of it, so ranks see disjoint samples. Flips are drawn from the same per-epoch generator.
    """

    def __init__(self, data: ImageArray, seed: int, rank: int = 0, world_size: int = 1, xflip: bool = False):
        self.data, self.seed, self.rank, self.world_size, self.xflip = data, seed, rank, world_size, xflip
        self.epoch, self.cursor = 0, 0
        self._order: torch.Tensor | None = None
        self._flips: torch.Tensor | None = None

    def _prepare_epoch(self) -> None:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.data.images)
        self._order = torch.randperm(n, generator=g)[self.rank::self.world_size]
        self._flips = torch.rand(n, generator=g)[self.rank::self.world_size] < 0.5

    def next(self, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (uint8 images [batch, C, R, R], int64 labels [batch] or None)."""
        idx_parts, flip_parts = [], []
        need = batch
        while need > 0:
            if self._order is None:
                self._prepare_epoch()
            take = min(need, len(self._order) - self.cursor)
            idx_parts.append(self._order[self.cursor:self.cursor + take])
            flip_parts.append(self._flips[self.cursor:self.cursor + take])
            self.cursor += take
            need -= take
            if self.cursor >= len(self._order):
                self.epoch, self.cursor, self._order = self.epoch + 1, 0, None
        idx = torch.cat(idx_parts)
        img = self.data.images[idx]
        if self.xflip:
            flip = torch.cat(flip_parts)
            img = torch.where(flip.view(-1, 1, 1, 1), img.flip(3), img)
        labels = self.data.labels[idx] if self.data.labels is not None else None
        return img, labels

    def state_dict(self) -> dict:
        # Every rank advances alike, so rank r's cursor c means global position c * world_size:
        # stored that way, a run can resume at another world size where the epoch left off.
        return {"epoch": self.epoch, "cursor": self.cursor, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        cursor = int(state["cursor"])
        saved_world = int(state.get("world_size", self.world_size))
        if saved_world != self.world_size:
            cursor = cursor * saved_world // self.world_size
        self.epoch, self.cursor, self._order = int(state["epoch"]), cursor, None
