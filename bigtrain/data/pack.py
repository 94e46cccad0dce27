"""`bigtrain pack`: a dataset -> WebDataset tar shards + a dataset.json manifest.

Sources: a folder of images (recursive), a .zip of images, an IDX folder or file
(MNIST / Fashion-MNIST), a .npz with uint8 'x' (and 'y'). Every image is fitted to the
resolution (see bigtrain.data.images: ``resize`` = centre crop + Lanczos, ``pad`` = centre
on black), kept at 1 channel when grayscale unless ``channels=3``, and written as
``{key}.{png|jpg|webp|npy}`` with ``{key}.cls`` (class index) and ``{key}.json`` (where it
came from). Keys are the source's sorted position (``000000042``), unique and stable.
Samples are spread over shards in a seeded shuffled order so that a shard of a folder
sorted by class is not one class.

Writing is crash-safe: each shard is written as ``NAME.tar.tmp`` and renamed when complete,
and the manifest, which is what the loader reads, is written last (also via a rename);
an interrupted pack leaves no manifest and no ``.tar`` that is half written.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import random
import zipfile
from typing import Callable

import numpy as np
from PIL import Image

from bigtrain.checkpoint import sha256_file
from bigtrain.data.arrays import FASHION_MNIST_LABELS, _find, _read_idx
from bigtrain.data.images import IMAGE_FILE_EXTS as FILE_EXTS
from bigtrain.data.images import array_to_pil, encode_image, fit_image, to_mode
from bigtrain.data.shards import MANIFEST, MANIFEST_FORMAT

FORMATS = ("png", "jpg", "webp", "raw")


class PackError(ValueError):
    """Bad pack input; nothing has been written."""


@dataclasses.dataclass
class PackOptions:
    resolution: int
    shard_size: int = 5000
    fmt: str = "png"
    labels: str = "auto"  # auto | none | PATH (CSV 'path,label' or JSON {path: label})
    workers: int = 1
    channels: int | None = None  # None: 1 for grayscale sources, else 3
    fit: str = "resize"
    quality: int = 95
    prefix: str = "train"
    split: str = "train"  # IDX sources: train | t10k
    seed: int = 0  # shuffles which shard a sample lands in; -1 keeps source order
    max_images: int | None = None  # applied after ``classes``
    classes: list[str] | None = None  # keep only these classes (label names or indices); None: all


@dataclasses.dataclass
class Source:
    """What to pack: ``n`` items, a way to load item i as a PIL image, labels."""
    kind: str
    n: int
    load: Callable[[int], Image.Image]
    describe: Callable[[int], dict]
    labels: np.ndarray | None
    label_names: list[str]
    grayscale: bool | None  # None: decide from the first image


# ------------------------------------------------------------------ sources
def _label_table(path: str) -> dict[str, str]:
    if not os.path.isfile(path):
        raise PackError(f"--labels {path}: no such file (use auto, none or a CSV/JSON file)")
    if path.endswith(".json"):
        with open(path) as f:
            table = json.load(f)
        if not isinstance(table, dict):
            raise PackError(f"--labels {path}: expected a JSON object {{relative path: label}}")
        return {str(k): str(v) for k, v in table.items()}
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    if rows and rows[0][:2] == ["path", "label"]:
        rows = rows[1:]
    bad = [r for r in rows if len(r) < 2]
    if bad:
        raise PackError(f"--labels {path}: each row must be 'path,label'; got {bad[0]}")
    return {r[0].strip(): r[1].strip() for r in rows}


def _labels_for(paths: list[str], labels_opt: str, what: str) -> tuple[np.ndarray | None, list[str]]:
    """Labels for relative paths: from a table file, or from the parent folder names."""
    if labels_opt == "none":
        return None, []
    if labels_opt == "auto":
        names_per_item = [os.path.dirname(p) for p in paths]
        if len(set(names_per_item)) <= 1:
            return None, []
    else:
        table = _label_table(labels_opt)
        missing = [p for p in paths if p not in table]
        if missing:
            raise PackError(f"--labels {labels_opt}: no label for {len(missing)} of {len(paths)} images in {what} "
                            f"(first: {missing[0]})")
        names_per_item = [table[p] for p in paths]
    names = sorted(set(names_per_item), key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[n] for n in names_per_item], dtype=np.int64), names


def _folder_source(folder: str, opts: PackOptions) -> Source:
    paths = sorted(os.path.relpath(os.path.join(d, f), folder)
                   for d, _, fs in os.walk(folder, followlinks=True) for f in fs if f.lower().endswith(FILE_EXTS))
    if not paths:
        raise PackError(f"{folder} holds no images ({', '.join(FILE_EXTS)}) and no IDX files")
    labels, names = _labels_for(paths, opts.labels, folder)

    def load(i: int) -> Image.Image:
        with Image.open(os.path.join(folder, paths[i])) as im:
            im.load()
            return im

    return Source("folder", len(paths), load, lambda i: {"source": paths[i]}, labels, names, None)


def _zip_source(path: str, opts: PackOptions) -> Source:
    try:
        with zipfile.ZipFile(path) as z:
            members = sorted(n for n in z.namelist() if n.lower().endswith(FILE_EXTS) and not n.endswith("/"))
    except zipfile.BadZipFile as e:
        raise PackError(f"{path} is not a valid zip: {e}") from None
    if not members:
        raise PackError(f"{path} holds no images ({', '.join(FILE_EXTS)})")
    labels, names = _labels_for(members, opts.labels, path)
    handle: dict[int, zipfile.ZipFile] = {}

    def load(i: int) -> Image.Image:
        z = handle.get(os.getpid())
        if z is None:  # one open handle per worker process
            z = handle[os.getpid()] = zipfile.ZipFile(path)
        with z.open(members[i]) as f, Image.open(f) as im:
            im.load()
            return im

    return Source("zip", len(members), load, lambda i: {"source": members[i]}, labels, names, None)


def _array_source(kind: str, x: np.ndarray, y: np.ndarray | None, names: list[str], opts: PackOptions,
                  what: str) -> Source:
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise PackError(f"{what}: images must be uint8 [N, H, W] or [N, H, W, C], got {x.dtype} {x.shape}")
    if len(x) == 0:
        raise PackError(f"{what} holds no images")
    if y is not None and len(y) != len(x):
        raise PackError(f"{what}: {len(x)} images but {len(y)} labels")
    if opts.labels == "none":
        y, names = None, []
    elif opts.labels != "auto":
        raise PackError(f"--labels {opts.labels}: a labels file applies to folders and zips; {what} carries its own")
    if y is not None and not names:
        names = [str(i) for i in range(int(y.max()) + 1)]
    gray = x.ndim == 3 or x.shape[3] == 1
    return Source(kind, len(x), lambda i: array_to_pil(x[i]), lambda i: {"source": f"{what}[{i}]"},
                  None if y is None else y.astype(np.int64), names, gray)


def open_source(src: str, opts: PackOptions) -> Source:
    if not os.path.exists(src):
        raise PackError(f"pack source {src} does not exist")
    if os.path.isdir(src):
        img = _find(src, f"{opts.split}-images-idx3-ubyte")
        if img:
            return _idx_source(img, opts)
        return _folder_source(src, opts)
    if src.endswith(".zip"):
        return _zip_source(src, opts)
    if src.endswith(".npz"):
        with np.load(src) as z:
            if "x" not in z:
                raise PackError(f"{src}: a .npz must hold 'x' (uint8 images); found {list(z.keys())}")
            x, y = z["x"], (z["y"] if "y" in z else None)
        return _array_source("npz", x, y, [], opts, src)
    if "idx3-ubyte" in os.path.basename(src):
        return _idx_source(src, opts)
    raise PackError(f"pack source {src}: expected a folder of images, a .zip, a .npz or an IDX file/folder")


def _idx_source(img_path: str, opts: PackOptions) -> Source:
    try:
        x = _read_idx(img_path)
        lbl_path = img_path.replace("images-idx3", "labels-idx1")
        y = _read_idx(lbl_path) if lbl_path != img_path and os.path.isfile(lbl_path) else None
    except ValueError as e:
        raise PackError(str(e)) from None
    names = FASHION_MNIST_LABELS if "fashion" in img_path.lower() else [str(i) for i in range(10)]
    return _array_source("idx", x, y, names if y is not None else [], opts, img_path)


# ------------------------------------------------------------------ writing
_SOURCE: Source | None = None  # set in each worker (inherited by fork)


def _write_shard(job: tuple[str, list[int], dict]) -> dict:
    """Write one shard from source items; returns its manifest entry."""
    import webdataset as wds
    path, items, o = job
    src = _SOURCE
    tmp = path + ".tmp"
    count, skipped, class_counts = 0, [], {}
    with open(tmp, "wb") as f:
        with wds.TarWriter(f, encoder=False, mtime=0) as tw:
            for i in items:
                try:
                    img = fit_image(to_mode(src.load(i), o["channels"]), o["resolution"], o["fit"])
                except Exception as e:  # an unreadable source image: skip it, report it
                    skipped.append(f"{src.describe(i)['source']}: {type(e).__name__}: {e}")
                    continue
                ext, data = encode_image(img, o["fmt"], o["quality"])
                sample = {"__key__": f"{i:09d}", ext: data,
                          "json": json.dumps({"index": i, **src.describe(i)}).encode()}
                if src.labels is not None:
                    lbl = int(src.labels[i])
                    sample["cls"] = str(lbl).encode()
                    class_counts[lbl] = class_counts.get(lbl, 0) + 1
                tw.write(sample)
                count += 1
        f.flush()
        os.fsync(f.fileno())
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return {"name": os.path.basename(path), "count": count, "sha256": digest, "skipped": skipped,
            "class_counts": class_counts}


def _class_filter(src: Source, wanted: list[str], src_path: str) -> set[int]:
    """Class indices for ``--classes``: each item a label name, else an index into them."""
    if src.labels is None:
        raise PackError(f"--classes: {src_path} has no labels to select by (unlabelled, or --labels none)")
    keep = set()
    for w in wanted:
        if w in src.label_names:
            keep.add(src.label_names.index(w))
        elif w.strip().isdigit() and int(w) < len(src.label_names):
            keep.add(int(w))
        else:
            raise PackError(f"--classes: {w!r} is neither a class of {src_path} ({', '.join(src.label_names)}) "
                            f"nor an index below {len(src.label_names)}")
    return keep


def _init_worker(src: Source) -> None:
    global _SOURCE
    _SOURCE = src


def pack(src_path: str, out_dir: str, opts: PackOptions, progress: bool = True, printer=print) -> dict:
    """Pack ``src_path`` into ``out_dir``; returns the manifest."""
    global _SOURCE
    r = opts.resolution
    if r < 4 or r & (r - 1):
        raise PackError(f"--resolution {r}: must be a power of two >= 4")
    if opts.fmt not in FORMATS:
        raise PackError(f"--format {opts.fmt}: expected one of {', '.join(FORMATS)}")
    if opts.shard_size < 1:
        raise PackError(f"--shard-size {opts.shard_size}: must be >= 1")
    if opts.channels not in (None, 1, 3):
        raise PackError(f"--channels {opts.channels}: must be 1 or 3")
    if opts.fit not in ("resize", "pad"):
        raise PackError(f"--fit {opts.fit}: expected resize or pad")
    src = open_source(src_path, opts)
    chosen = list(range(src.n))
    kept_classes = None
    if opts.classes is not None:
        kept_classes = _class_filter(src, opts.classes, src_path)
        chosen = [i for i in chosen if int(src.labels[i]) in kept_classes]
        if not chosen:
            raise PackError(f"{src_path}: no images of --classes {','.join(opts.classes)}")
    if opts.max_images is not None:
        chosen = chosen[:opts.max_images]
    n = len(chosen)
    channels = opts.channels
    if channels is None:
        gray = src.grayscale
        for i in chosen[:100] if gray is None else ():
            try:
                gray = src.load(i).mode in ("1", "L", "LA", "I", "I;16", "F")
                break
            except Exception:  # unreadable: _write_shard reports it
                continue
        channels = 1 if gray else 3
    order = list(chosen)
    if opts.seed >= 0:
        random.Random(opts.seed).shuffle(order)
    num_shards = (n + opts.shard_size - 1) // opts.shard_size
    width = max(6, len(str(num_shards - 1)))
    os.makedirs(out_dir, exist_ok=True)
    man_path = os.path.join(out_dir, MANIFEST)
    if os.path.exists(man_path):
        os.remove(man_path)  # the old manifest would vouch for shards about to be replaced
    for name in os.listdir(out_dir):  # shards of an earlier pack into this folder, finished or not
        if name.startswith(opts.prefix + "-") and (name.endswith(".tar") or name.endswith(".tar.tmp")):
            os.remove(os.path.join(out_dir, name))
    o = {"resolution": r, "channels": channels, "fit": opts.fit, "fmt": opts.fmt, "quality": opts.quality}
    jobs = [(os.path.join(out_dir, f"{opts.prefix}-{s:0{width}d}.tar"),
             sorted(order[s * opts.shard_size:(s + 1) * opts.shard_size]), o) for s in range(num_shards)]
    entries: list[dict] = []
    from tqdm import tqdm
    bar = tqdm(total=n, unit="img", desc=f"pack -> {out_dir}", disable=not progress, dynamic_ncols=True)
    try:
        if opts.workers > 1:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(opts.workers, initializer=_init_worker, initargs=(src,)) as pool:
                for e in pool.imap_unordered(_write_shard, jobs):
                    entries.append(e)
                    bar.update(e["count"] + len(e["skipped"]))
        else:
            _SOURCE = src
            for job in jobs:
                e = _write_shard(job)
                entries.append(e)
                bar.update(e["count"] + len(e["skipped"]))
    finally:
        bar.close()
        _SOURCE = None
    entries.sort(key=lambda e: e["name"])
    skipped = [s for e in entries for s in e.pop("skipped")]
    for s in skipped[:10]:
        printer(f"warning: skipped unreadable image {s}")
    if len(skipped) > 10:
        printer(f"warning: ... {len(skipped) - 10} more unreadable images skipped")
    count = sum(e["count"] for e in entries)
    if count == 0:
        raise PackError(f"{src_path}: none of its {n} images could be read")
    class_counts = None
    if src.labels is not None:
        class_counts = [0] * len(src.label_names)
        for e in entries:
            for k, v in e["class_counts"].items():
                class_counts[int(k)] += v
    for e in entries:
        e.pop("class_counts")
    digest = hashlib.sha256("".join(e["sha256"] for e in entries).encode()).hexdigest()
    manifest = {
        "format": MANIFEST_FORMAT, "version": 1,
        "count": count, "resolution": r, "channels": channels, "image_format": opts.fmt,
        "fit": opts.fit, "label_names": src.label_names if src.labels is not None else [],
        "class_counts": class_counts, "skipped": len(skipped), "source": os.path.abspath(src_path),
        "source_kind": src.kind, "shuffle_seed": opts.seed, "sha256": digest, "shards": entries,
        "classes_kept": None if kept_classes is None else [src.label_names[k] for k in sorted(kept_classes)],
    }
    tmp = man_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, man_path)
    return manifest


def describe(manifest: dict, out_dir: str) -> str:
    m = manifest
    labels = f", {len(m['label_names'])} classes" if m["label_names"] else ", unlabelled"
    if m.get("classes_kept"):
        labels = f", {len(m['classes_kept'])} of {len(m['label_names'])} classes ({', '.join(m['classes_kept'])})"
    return (f"packed {m['count']} images ({m['resolution']}x{m['resolution']}x{m['channels']}, {m['image_format']}"
            f"{labels}) into {len(m['shards'])} shard(s) in {out_dir}; sha256 {m['sha256'][:16]}"
            + (f"; {m['skipped']} unreadable image(s) skipped" if m["skipped"] else ""))
