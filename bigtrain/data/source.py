"""One interface over the kinds of data the trainer reads: an in-memory array (small
datasets, exactly resumable), a WebDataset shard stream (any size), and random images for
benchmarks (``data.source: synthetic``)."""
from __future__ import annotations

import torch

from bigtrain.data.arrays import ArrayStream, DataConfig, load_images
from bigtrain.data.shards import DataError, ShardStream, is_shard_source, open_shards, read_epoch


class DataSource:
    """What the trainer needs from a dataset. ``next(n)`` gives uint8 images [n, C, R, R]
    and int64 labels [n] (None when unconditional)."""
    resolution: int
    channels: int
    label_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def preview(self, n: int) -> torch.Tensor:
        """The first n images, for the reals grid."""
        raise NotImplementedError

    def class_probs(self) -> torch.Tensor:
        """float64 [num_classes]: the dataset's class balance (conditional fakes follow it)."""
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ArraySource(DataSource):
    def __init__(self, cfg: DataConfig, seed: int, rank: int, world_size: int):
        self.data = load_images(cfg)
        self.stream = ArrayStream(self.data, seed, rank, world_size, cfg.xflip)
        self.channels, self.resolution = self.data.images.shape[1], self.data.images.shape[2]
        self.label_names = list(self.data.label_names)

    def next(self, n):
        return self.stream.next(n)

    def preview(self, n):
        return self.data.images[:n]

    def class_probs(self):
        return torch.bincount(self.data.labels, minlength=self.num_classes).double()

    def state_dict(self):
        return self.stream.state_dict()

    def load_state_dict(self, state):
        if "cursor" in state:
            self.stream.load_state_dict(state)


class ShardSource(DataSource):
    def __init__(self, cfg: DataConfig, seed: int, rank: int, world_size: int, pin_memory: bool = False,
                 printer=print):
        self.cfg = cfg
        self.shards = open_shards(cfg.source, cfg.manifest)
        self.resolution, self.channels = cfg.resolution, self.shards.channels
        if cfg.use_labels and not self.shards.label_names:
            raise DataError(f"data.use_labels=true but data.source={cfg.source} has no class labels in its manifest")
        self.label_names = list(self.shards.label_names) if cfg.use_labels else []
        if cfg.max_images is not None:
            printer("warning: data.max_images applies to in-memory sources; a shard stream reads every shard")
        self.stream = ShardStream(self.shards, cfg.resolution, self.channels, cfg.fit, seed, rank, world_size,
                                  cfg.xflip, cfg.workers, cfg.shuffle_buffer, cfg.max_bad_fraction,
                                  pin_memory=pin_memory, printer=printer)
        counts = self.shards.class_counts
        self._class_p = torch.tensor(counts, dtype=torch.float64) if counts else None

    def next(self, n):
        img, lbl = self.stream.next(n)
        if not self.label_names:
            return img, None
        if (lbl < 0).any():
            raise DataError(f"data.use_labels=true but a sample in {self.cfg.source} has no .cls label")
        return img, lbl

    def preview(self, n):
        imgs, errors = [], []
        for b in read_epoch(self.shards, n, self.resolution, self.channels, self.cfg.fit):
            imgs.append(b["img"])
            errors += b["errors"]
            if sum(len(i) for i in imgs) >= n:
                break
        if not imgs or not sum(len(i) for i in imgs):  # a pass over every shard found no readable image
            raise DataError(f"no image could be read from data.source={self.cfg.source} "
                            f"({len(self.shards.urls)} shard(s)); first errors: " + "; ".join(errors[:3]))
        return torch.cat(imgs)[:n]

    def class_probs(self):
        return self._class_p if self._class_p is not None else torch.ones(self.num_classes, dtype=torch.float64)

    def stats(self):
        return self.stream.stats()

    def state_dict(self):
        return self.stream.state_dict()

    def load_state_dict(self, state):
        self.stream.load_state_dict(state)

    def close(self):
        self.stream.close()


class SyntheticSource(DataSource):
    """``data.source: synthetic``: a fixed pool of random uint8 RGB images, for benchmarks that
    must not time data loading; with ``data.use_labels``, each image has a random label among
    CLASSES classes (ImageNet's count, what class-conditional BigGAN is sized for). ``next``
    cycles through the pool by index on the pool's device, so after ``to(device)`` a batch costs
    no host work and no copy."""
    POOL = 64  # images in the pool unless data.max_images says otherwise
    CLASSES = 1000

    def __init__(self, cfg: DataConfig, seed: int, rank: int):
        self.resolution, self.channels = cfg.resolution, 3
        self.label_names = [str(i) for i in range(self.CLASSES)] if cfg.use_labels else []
        g = torch.Generator().manual_seed(seed * 1_000_003 + rank)
        size = cfg.max_images or self.POOL
        self.images = torch.randint(0, 256, (size, 3, cfg.resolution, cfg.resolution), dtype=torch.uint8, generator=g)
        self.labels = torch.randint(0, self.CLASSES, (size,), generator=g) if cfg.use_labels else None
        self.cursor = 0

    def to(self, device: torch.device | str) -> "SyntheticSource":
        """Move the pool onto ``device`` (the GPU the trainer runs on)."""
        self.images = self.images.to(device)
        if self.labels is not None:
            self.labels = self.labels.to(device)
        return self

    def next(self, n):
        idx = (torch.arange(n, device=self.images.device) + self.cursor) % len(self.images)
        self.cursor = (self.cursor + n) % len(self.images)
        return self.images[idx], (self.labels[idx] if self.labels is not None else None)

    def preview(self, n):
        return self.images[:n].cpu()

    def class_probs(self):
        return torch.full((self.num_classes,), 1 / self.num_classes if self.num_classes else 0, dtype=torch.float64)

    def state_dict(self):
        return {"cursor": self.cursor}

    def load_state_dict(self, state):
        self.cursor = int(state.get("cursor", 0))


def open_data(cfg: DataConfig, seed: int, rank: int = 0, world_size: int = 1, pin_memory: bool = False,
              printer=print) -> DataSource:
    if cfg.source == "synthetic":
        return SyntheticSource(cfg, seed, rank)
    if is_shard_source(cfg.source):
        return ShardSource(cfg, seed, rank, world_size, pin_memory, printer)
    return ArraySource(cfg, seed, rank, world_size)
