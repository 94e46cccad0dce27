"""Training-state checkpoints.

Written atomically: the state goes to a temp file in the same folder, is fsynced, then
renamed over the final name, and the folder is fsynced; a kill at any moment leaves either
the old set of checkpoints or the old set plus one complete new one. Loaded with
``weights_only=True``: a checkpoint holds only tensors and plain Python values, so loading
one from an untrusted source cannot run code.
"""
from __future__ import annotations

import dataclasses
import hashlib
import glob
import os
import shutil
import random
import re
from typing import BinaryIO, Callable

import numpy as np
import torch

from bigtrain.config import require

_NAME = re.compile(r"^ckpt-(\d{12})\.pt$")
FORMAT = "bigtrain-train-state"
FORMAT_VERSION = 1


@dataclasses.dataclass
class CheckpointConfig:
    interval_ticks: int = 10  # Write training state every this many ticks (and always at the end and on SIGTERM/SIGINT).
    keep: int = 3  # Keep the newest this many training-state checkpoints; older ones are deleted.

    def __post_init__(self):
        require(self.interval_ticks >= 1, "interval_ticks", self.interval_ticks, "must be >= 1")
        require(self.keep >= 1, "keep", self.keep, "must be >= 1")


def save_atomic(obj: dict, path: str) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


def write_atomic(path: str, write: Callable[[BinaryIO], object]) -> None:
    """``write(f)`` into a temp file beside ``path``, fsynced, renamed over ``path``, the folder
    fsynced: a kill at any moment leaves the old file or the complete new one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_state(path: str) -> dict:
    """Load a training-state checkpoint without unpickling arbitrary objects."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or a pickle holding code objects
        raise ValueError(f"checkpoint {path} cannot be loaded safely (corrupt, or not a bigtrain "
                         f"checkpoint): {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a bigtrain training-state checkpoint")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {state['format_version']}, newer than this "
                         f"bigtrain understands ({FORMAT_VERSION}); upgrade bigtrain")
    return state


def checkpoint_dir(run_dir: str) -> str:
    """Where a run keeps its training-state checkpoints."""
    return os.path.join(run_dir, "checkpoints")


class CheckpointManager:
    """ckpt-<nimg>.pt files in one folder; the newest ``keep`` survive."""

    def __init__(self, folder: str, keep: int):
        self.folder, self.keep = folder, keep

    def path_for(self, nimg: int) -> str:
        return os.path.join(self.folder, f"ckpt-{nimg:012d}.pt")

    def list(self) -> list[str]:
        """Complete checkpoints, oldest first (temp files of interrupted writes are ignored)."""
        names = [os.path.basename(p) for p in glob.glob(os.path.join(self.folder, "ckpt-*.pt"))]
        return [os.path.join(self.folder, n) for n in sorted(n for n in names if _NAME.match(n))]

    def latest(self) -> str | None:
        found = self.list()
        return found[-1] if found else None

    def shard_folder(self, nimg: int) -> str:
        """Where a sharding strategy (DeepSpeed) writes its per-rank state for this checkpoint;
        the .pt written after it is what makes the checkpoint complete."""
        return self.path_for(nimg)[:-len(".pt")] + ".ds"

    def save(self, state: dict, nimg: int) -> str:
        # Temp files left by a writer that was killed mid-write are garbage; only rank 0 writes.
        for stale in glob.glob(os.path.join(self.folder, "ckpt-*.pt.tmp*")):
            os.remove(stale)
        path = self.path_for(nimg)
        save_atomic({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, path)
        for old in self.list()[:-self.keep]:
            os.remove(old)
        # Shard folders of rotated-out checkpoints, or of writes killed before their .pt.
        keep = {self.shard_folder(int(_NAME.match(os.path.basename(p)).group(1))) for p in self.list()}
        for ds in glob.glob(os.path.join(self.folder, "ckpt-*.ds")):
            if ds not in keep:
                shutil.rmtree(ds, ignore_errors=True)
        return path


def resolve_resume(arg: str | None, run_dir: str) -> str | None:
    """``--resume auto`` -> newest checkpoint in the run dir (None if there is none);
    a folder -> newest checkpoint in it (or its checkpoints/); a file -> itself."""
    if arg is None:
        return None
    if arg == "auto":
        return CheckpointManager(checkpoint_dir(run_dir), 1).latest()
    if os.path.isdir(arg):
        for folder in (checkpoint_dir(arg), arg):
            found = CheckpointManager(folder, 1).latest()
            if found:
                return found
        raise FileNotFoundError(f"{arg}: no ckpt-*.pt checkpoint in this folder or its checkpoints/")
    if not os.path.isfile(arg):
        raise FileNotFoundError(f"--resume {arg}: no such checkpoint file")
    return arg


def capture_rng() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    v, keys, gauss = state["python"]
    random.setstate((v, tuple(keys), gauss))
