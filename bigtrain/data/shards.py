"""Streaming WebDataset tar shards: local paths, brace patterns, ``pipe:`` commands.

Shards are opened and untarred by ``webdataset`` (which also handles ``pipe:`` and
``http(s)://`` through its ``gopen``); this module decides which shard each DataLoader
worker of each rank reads, decodes, shuffles and batches inside the worker, and keeps
count of what could not be read.

Two modes:
- ``resample`` (training): every worker draws shards at random with replacement, forever,
  from a generator seeded by (seed, rank, worker, restart). ``restart`` is bumped on each
  resume, so a resumed run sees fresh randomness instead of replaying its first samples.
- ``epoch`` (evaluation): shard i goes to global worker ``i % (world * workers)``, so each
  sample is read exactly once per pass across all ranks and workers.

Nothing here holds the dataset or its index in memory: only the shard URL list, the
shuffle buffer and the batch being built.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import time
from typing import Iterator

import numpy as np
import torch

from bigtrain.data.images import IMAGE_EXTS, BadSample, decode_image, probe_image

MANIFEST = "dataset.json"
MANIFEST_FORMAT = "bigtrain-shards"
MIN_SAMPLES_FOR_FRACTION = 256  # the failure-fraction check waits for this many samples
MAX_BARREN_SHARDS = 50  # consecutive shards with no readable sample before a worker gives up


class DataError(RuntimeError):
    """The data cannot be read well enough to train on (exit code 4 from the CLI)."""


def is_shard_source(source: str) -> bool:
    """True for tar shard URLs/patterns, ``pipe:`` commands and folders holding a dataset.json."""
    return (source.startswith("pipe:") or "://" in source or ".tar" in source
            or os.path.isfile(os.path.join(source, MANIFEST)) or source.endswith(MANIFEST))


def names_command_or_url(source: str) -> bool:
    """True when opening ``source`` would run a command (``pipe:``) or fetch a URL (any part of a
    ``::``-joined list): what bigtrain opens only when the user named it (docs/security.md)."""
    return any(not _is_local(part.strip()) for part in source.split("::"))


def _is_local(url: str) -> bool:
    return not (url.startswith("pipe:") or "://" in url) or url.startswith("file://")


def _local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


@dataclasses.dataclass
class ShardSet:
    """The shard URLs of a dataset and what its manifest (if found) says about them."""
    source: str
    urls: list[str]
    manifest: dict | None
    resolution: int
    channels: int
    label_names: list[str]
    class_counts: list[int] | None
    counts: dict[str, int]  # samples per shard URL, where the manifest gives them


def read_manifest(path: str) -> dict:
    try:
        with open(path) as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read shard manifest {path}: {e}") from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT or "shards" not in m:
        raise DataError(f"{path} is not a bigtrain shard manifest (written by `bigtrain pack`)")
    return m


def open_shards(source: str, manifest: str | None = None, key: str = "data.source") -> ShardSet:
    """Expand ``source`` into shard URLs and read the manifest. Errors name ``key``.

    ``source`` is a folder (or its dataset.json) written by ``bigtrain pack``, or shard URLs:
    ``data/train-{000000..000127}.tar``, several joined with ``::``, ``pipe:CMD``. The
    manifest is ``manifest`` if given, else dataset.json beside the first local shard.
    """
    if not source or not source.strip():
        raise DataError(f"{key} is empty: give shard URLs or a folder written by `bigtrain pack`")
    man_path = manifest
    if source.endswith(MANIFEST) or os.path.isfile(os.path.join(source, MANIFEST)):
        man_path = source if source.endswith(MANIFEST) else os.path.join(source, MANIFEST)
        m = read_manifest(man_path)
        folder = os.path.dirname(man_path)
        urls = [os.path.join(folder, s["name"]) for s in m["shards"]]
    else:
        if os.path.isdir(source):
            raise DataError(f"{key}={source} is a folder without {MANIFEST}: an unfinished `bigtrain pack`, "
                            "or give the shard URLs (e.g. 'dir/train-{000000..000009}.tar')")
        from webdataset.shardlists import expand_urls  # here, not at import: `bench gpu` runs without it
        try:
            urls = expand_urls(source)
        except Exception as e:  # braceexpand raises on malformed patterns
            raise DataError(f"{key}={source}: cannot expand the URL pattern: {e}") from None
        m = None
    if not urls:
        raise DataError(f"{key}={source} expands to no shard URLs")
    local = [u for u in urls if _is_local(u)]
    if local and not any(os.path.isfile(_local_path(u)) for u in local):
        hint = "" if ".tar" in source else "; pack a dataset first: bigtrain pack SRC OUT_DIR --resolution R"
        raise DataError(f"{key}={source}: none of its {len(local)} shard paths exist "
                        f"(first: {_local_path(local[0])}){hint}")
    if m is None:
        guess = man_path or (os.path.join(os.path.dirname(_local_path(local[0])), MANIFEST) if local else None)
        if guess and os.path.isfile(guess):
            m = read_manifest(guess)
        elif man_path:
            raise DataError(f"data.manifest={man_path} does not exist")
    counts: dict[str, int] = {}
    if m is not None:
        by_name = {s["name"]: s["count"] for s in m["shards"]}
        counts = {u: by_name[os.path.basename(u)] for u in urls if os.path.basename(u) in by_name}
        return ShardSet(source, urls, m, int(m["resolution"]), int(m["channels"]), list(m.get("label_names") or []),
                        m.get("class_counts"), counts)
    # No manifest (shards from another tool, or remote): look at the first readable sample.
    for url in urls[:8]:
        for sample in _tar_samples(url, lambda e: True):
            ext = next((e for e in IMAGE_EXTS if e in sample), None)
            shape = probe_image(ext, sample[ext]) if ext else None
            if shape is not None:
                h, w, c = shape
                return ShardSet(source, urls, None, min(h, w), c, [], None, counts)
    raise DataError(f"{key}={source}: found no readable image in the first {min(8, len(urls))} shard(s)")


def _tar_samples(url: str, handler) -> Iterator[dict]:
    """Samples of one shard (dicts of extension -> bytes, plus __key__); errors go to handler."""
    import webdataset as wds
    return wds.tarfile_samples([{"url": url}], handler=handler)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class ShardDataset(torch.utils.data.IterableDataset):
    """Batches of uint8 images (and labels) from shards, built inside each DataLoader worker.

    Each yielded batch is a dict: ``img`` uint8 [B, C, R, R], ``label`` int64 [B] (-1 where a
    sample has no .cls), ``keys`` (with ``with_keys``), and the worker's counters since its
    previous batch: ``good``, ``bad`` (samples lost), ``bad_shards`` and ``errors`` (messages).
    """

    def __init__(self, shards: ShardSet, batch: int, resolution: int, channels: int, fit: str = "resize",
                 mode: str = "resample", seed: int = 0, rank: int = 0, world_size: int = 1, restart: int = 0,
                 xflip: bool = False, shuffle_buffer: int = 1000, with_keys: bool = False,
                 drop_last: bool | None = None):
        super().__init__()
        assert mode in ("resample", "epoch")
        self.urls, self.counts = list(shards.urls), dict(shards.counts)
        self.batch, self.res, self.channels, self.fit = batch, resolution, channels, fit
        self.mode, self.seed, self.rank, self.world, self.restart = mode, seed, rank, world_size, restart
        self.xflip, self.shuffle_buffer, self.with_keys = xflip, shuffle_buffer, with_keys
        self.drop_last = mode == "resample" if drop_last is None else drop_last
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.good = self.bad = self.bad_shards = 0
        self.errors: list[str] = []

    def _shard_urls(self, worker: int, num_workers: int, rng: random.Random) -> Iterator[str]:
        if self.mode == "epoch":
            return iter(self.urls[self.rank * num_workers + worker::self.world * num_workers])
        return (rng.choice(self.urls) for _ in itertools.count())

    def _samples(self, url: str) -> Iterator[tuple[np.ndarray, int, str]]:
        """Decoded samples of one shard; anything unreadable is counted, not raised."""
        name = os.path.basename(_local_path(url)) if _is_local(url) else url
        failures: list[Exception] = []

        def handler(exn: Exception) -> bool:
            failures.append(exn)
            return True  # skip and go on

        n_good = n_bad = 0
        for sample in _tar_samples(url, handler):
            key = sample.get("__key__", "?")
            ext = next((e for e in IMAGE_EXTS if e in sample), None)
            try:
                if ext is None:
                    raise BadSample(f"no image member (has {sorted(k for k in sample if not k.startswith('__'))})")
                img = decode_image(ext, sample[ext], self.res, self.channels, self.fit)
                label = int(sample["cls"].decode().strip()) if "cls" in sample else -1
            except (BadSample, ValueError, UnicodeDecodeError) as e:
                n_bad += 1
                self.bad += 1
                self.errors.append(f"{name}: sample {key}: {e}")
                continue
            n_good += 1
            self.good += 1
            yield img, label, key
        self._last_shard_good = n_good
        expected = self.counts.get(url)
        # Samples the manifest promises but the shard did not deliver (truncated, missing).
        missing = max(expected - n_good - n_bad, 0) if expected is not None else 0
        if failures:
            self.bad_shards += 1
            lost = missing if expected is not None else 1
            self.bad += lost
            first = str(failures[0]).split("\n")[0][:200]
            self.errors.append(f"{name}: {type(failures[0]).__name__}: {first} ({lost} sample(s) lost)")
        elif missing:  # tarfile stops quietly at some truncations; the manifest count catches them
            self.bad_shards += 1
            self.bad += missing
            self.errors.append(f"{name}: incomplete (truncated?): {missing} sample(s) fewer than the manifest lists")

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = random.Random(_seed(self.seed, self.rank, worker, self.restart, 0x5EED))
        self._reset_counters()
        buffer: list[tuple[np.ndarray, int, str]] = []
        out: list[tuple[np.ndarray, int, str]] = []
        barren = 0
        shuffle = self.mode == "resample" and self.shuffle_buffer > 1

        def emit(items):
            imgs = np.stack([i for i, _, _ in items])
            if self.xflip:
                flip = np.array([rng.random() < 0.5 for _ in items])
                imgs[flip] = imgs[flip][..., ::-1]
            return self._batch(torch.from_numpy(imgs), [lbl for _, lbl, _ in items], [k for _, _, k in items])

        for url in self._shard_urls(worker, num_workers, rng):
            self._last_shard_good = 0
            for item in self._samples(url):
                if shuffle:
                    if len(buffer) < self.shuffle_buffer:
                        buffer.append(item)
                        continue
                    j = rng.randrange(len(buffer))
                    item, buffer[j] = buffer[j], item
                out.append(item)
                if len(out) == self.batch:
                    yield emit(out)
                    out = []
            barren = barren + 1 if self._last_shard_good == 0 else 0
            if self.mode == "resample" and barren >= MAX_BARREN_SHARDS:
                raise DataError(f"{barren} shards in a row gave no readable sample; last errors: "
                                + "; ".join(self.errors[-3:]))
        rng.shuffle(buffer)
        out.extend(buffer)
        while len(out) >= self.batch or (out and not self.drop_last):
            yield emit(out[:self.batch])
            out = out[self.batch:]
        if self.errors or self.bad:
            # Counters of a pass that ended between batches still reach the main process.
            yield self._batch(torch.zeros(0, self.channels, self.res, self.res, dtype=torch.uint8), [], [])

    def _batch(self, img: torch.Tensor, labels: list[int], keys: list[str]) -> dict:
        """A batch dict carrying this worker's counters since its previous batch (then reset)."""
        b = {"img": img, "label": torch.tensor(labels, dtype=torch.int64), "good": self.good, "bad": self.bad,
             "bad_shards": self.bad_shards, "errors": self.errors}
        if self.with_keys:
            b["keys"] = keys
        self._reset_counters()
        return b


def make_loader(dataset: ShardDataset, workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    kwargs = {"prefetch_factor": 4, "persistent_workers": False} if workers > 0 else {}
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                                       **kwargs)


class RateLimitedLog:
    """The first ``burst`` messages, then at most one every ``interval`` seconds (with a count)."""

    def __init__(self, printer, burst: int = 5, interval: float = 30.0):
        self.printer, self.burst, self.interval = printer, burst, interval
        self.n, self.suppressed, self.last = 0, 0, 0.0

    def __call__(self, msg: str) -> None:
        self.n += 1
        now = time.monotonic()
        if self.n <= self.burst or now - self.last >= self.interval:
            extra = f" (+{self.suppressed} similar messages suppressed)" if self.suppressed else ""
            self.printer(f"warning: data: {msg}{extra}")
            self.last, self.suppressed = now, 0
        else:
            self.suppressed += 1


class ShardStream:
    """The training side: an endless, shuffled stream of batches of any size from a
    ShardDataset behind a DataLoader, with failure accounting and the resume counter."""

    def __init__(self, shards: ShardSet, resolution: int, channels: int, fit: str, seed: int, rank: int,
                 world_size: int, xflip: bool, workers: int, shuffle_buffer: int, max_bad_fraction: float,
                 chunk: int = 32, pin_memory: bool = False, printer=print):
        self.shards = shards
        self._ds_args = dict(resolution=resolution, channels=channels, fit=fit, mode="resample", seed=seed,
                             rank=rank, world_size=world_size, xflip=xflip, shuffle_buffer=shuffle_buffer)
        self.workers, self.chunk, self.pin_memory = workers, chunk, pin_memory
        self.max_bad_fraction = max_bad_fraction
        self.restart = 0
        self.good = self.bad = self.bad_shards = 0
        self.log = RateLimitedLog(printer)
        self._it = None
        self._loader = None
        self._img: list[torch.Tensor] = []
        self._lbl: list[torch.Tensor] = []
        self._buffered = 0

    def _start(self) -> None:
        ds = ShardDataset(self.shards, self.chunk, restart=self.restart, **self._ds_args)
        self._loader = make_loader(ds, self.workers, self.pin_memory)
        self._it = iter(self._loader)

    def _account(self, b: dict) -> None:
        self.good += b["good"]
        self.bad += b["bad"]
        self.bad_shards += b["bad_shards"]
        for msg in b["errors"]:
            self.log(msg)
        seen = self.good + self.bad
        if seen >= MIN_SAMPLES_FOR_FRACTION and self.bad > self.max_bad_fraction * seen:
            raise DataError(f"{self.bad} of {seen} samples ({self.bad / seen:.1%}) could not be read from "
                            f"{self.shards.source}, more than data.max_bad_fraction={self.max_bad_fraction}; "
                            "see the warnings above for the shards")

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (uint8 images [n, C, R, R], int64 labels [n], -1 where unlabelled)."""
        if self._it is None:
            self._start()
        while self._buffered < n:
            try:
                b = next(self._it)
            except StopIteration:  # cannot happen in resample mode unless every worker died
                raise DataError(f"the shard stream from {self.shards.source} ended") from None
            self._account(b)
            self._img.append(b["img"])
            self._lbl.append(b["label"])
            self._buffered += len(b["img"])
        # A batch within one buffered chunk (the usual case: a batch that divides the loader's chunk
        # or is a multiple of it) is sliced, not copied: with pin_memory its slices stay in the loader's
        # pinned memory, and the copy to the GPU starts from there instead of pinning a copy of a copy.
        # A batch that spans chunks is still concatenated.
        img, lbl = ((self._img[0], self._lbl[0]) if len(self._img) == 1
                    else (torch.cat(self._img), torch.cat(self._lbl)))
        rest = len(img) - n
        self._img, self._lbl = ([img[n:]], [lbl[n:]]) if rest else ([], [])
        self._buffered = rest
        return img[:n], lbl[:n]

    def stats(self) -> dict[str, float]:
        return {"Data/samples_read": self.good, "Data/bad_samples": self.bad, "Data/bad_shards": self.bad_shards}

    def state_dict(self) -> dict:
        return {"kind": "shards", "restart": self.restart, "good": self.good, "bad": self.bad,
                "bad_shards": self.bad_shards}

    def load_state_dict(self, state: dict) -> None:
        # A resumed stream draws new randomness (restart + 1) instead of replaying its start.
        self.restart = int(state.get("restart", -1)) + 1
        self.good, self.bad = int(state.get("good", 0)), int(state.get("bad", 0))
        self.bad_shards = int(state.get("bad_shards", 0))
        self.close()

    def close(self) -> None:
        self._it = self._loader = None
        self._img, self._lbl, self._buffered = [], [], 0


def read_epoch(shards: ShardSet, batch: int, resolution: int, channels: int, fit: str = "resize",
               rank: int = 0, world_size: int = 1, workers: int = 0, with_keys: bool = False):
    """One pass over the shards for evaluation: each sample exactly once across ranks and
    workers (a shard is never split). Yields the ShardDataset batch dicts (counters included)."""
    ds = ShardDataset(shards, batch, resolution, channels, fit, mode="epoch", rank=rank, world_size=world_size,
                      with_keys=with_keys)
    yield from make_loader(ds, workers)
