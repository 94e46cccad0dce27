"""Training-state checkpoints.

Written atomically: the state goes to a temp file in the same folder, is fsynced, then
renamed over the final name, and the folder is fsynced; a kill at any moment leaves either
the old set of checkpoints or the old set plus one complete new one. Loaded with
``weights_only=True``: a checkpoint holds only tensors and plain Python values, so loading
one from an untrusted source cannot run code.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import glob
import os
import shutil
import stat
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


def pid_alive(text: str) -> bool:
    """Whether ``text`` is the PID of a live process (this host)."""
    if not text.isdigit():
        return False
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or not a PID we can judge): left alone
    return True


def save_atomic(obj: dict, path: str) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


class _Recording:
    """A binary file whose first refused write's OSError is kept for the caller to raise."""

    def __init__(self, f: BinaryIO):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def write_atomic(path: str, write: Callable[[BinaryIO], object]) -> None:
    """``write(f)`` into a temp file beside ``path``, fsynced, renamed over ``path``, the folder
    fsynced: a kill at any moment leaves the old file or the complete new one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            out = _Recording(f)
            try:
                write(out)
            except Exception as e:
                # torch's zip writer swallows the OSError of a refused write (a full disk, a file
                # size limit) and raises "unexpected pos"; surface the file system's own error.
                if out.error is not None:
                    raise OSError(out.error.errno, out.error.strerror, tmp) from None
                if isinstance(e, RuntimeError) and ("inline_container" in str(e) or "write" in str(e).lower()):
                    raise OSError(errno.EIO, f"write failed ({str(e).splitlines()[0]})", tmp) from None
                raise
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


def content_digest(obj) -> str:
    """SHA-256 of a checkpoint's content: every tensor's dtype, shape and bytes and every plain
    value, in a fixed order (dict keys sorted). Written into the checkpoint at save and checked at
    load, so a flipped byte in a tensor or a value is found, not trained on."""
    h = hashlib.sha256()

    def walk(x) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            h.update(f"D{len(x)}".encode())
            for k in sorted(x, key=repr):
                h.update(repr(k).encode())
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)}".encode())
            for v in x:
                walk(v)
        else:
            h.update(f"V{type(x).__name__}:{x!r}".encode())
    walk(obj)
    return h.hexdigest()


def folder_digest(folder: str) -> dict[str, str]:
    """relative path -> SHA-256 of every file under ``folder`` (a DeepSpeed .ds folder)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            full = os.path.join(root, name)
            # Never followed or opened: a link or a FIFO (a hostile folder) differs from any digest.
            regular = not os.path.islink(full) and stat.S_ISREG(os.lstat(full).st_mode)
            out[os.path.relpath(full, folder)] = sha256_file(full) if regular else "not a regular file"
    return dict(sorted(out.items()))


def seal(state: dict, ds_folder: str | None = None) -> dict:
    """``state`` with its ``digest``: of its content, and of the files of its DeepSpeed folder when
    it has one. (A digest finds damage, not forgery: anyone can seal a file they wrote.)"""
    state = {k: v for k, v in state.items() if k != "digest"}
    state["digest"] = {"algorithm": "sha256", "content": content_digest(state),
                       "ds": folder_digest(ds_folder) if ds_folder and os.path.isdir(ds_folder) else None}
    return state


def load_error(e: Exception) -> str:
    """One line for a failed weights-only load: what the file asked for (torch's message opens with
    advice to load with code allowed, which is not shown), else the first line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    refused = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln]
    return f"{type(e).__name__}: {(refused or lines or [''])[0]}"


class DamagedCheckpoint(ValueError):
    """A checkpoint that does not load, or whose content differs from the digest written with it."""


def load_state(path: str, shards: bool = False) -> dict:
    """Load a training-state checkpoint without unpickling arbitrary objects, and check it against
    the digest written with it (checkpoints of bigtrain before the digest have none). ``shards``:
    also check the files of its DeepSpeed folder (resume reads them; generate, export and eval read
    G_ema from the .pt alone). Files the digest does not list (zero_to_fp32's output) are ignored."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated file, or a pickle holding code objects
        raise DamagedCheckpoint(f"checkpoint {path} cannot be loaded safely (corrupt, truncated, or not a bigtrain "
                                f"checkpoint): {load_error(e)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a bigtrain training-state checkpoint")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {state['format_version']}, newer than this "
                         f"bigtrain understands ({FORMAT_VERSION}); upgrade bigtrain")
    digest = state.pop("digest", None)
    if digest is not None:
        try:
            content = content_digest(state)
        except RecursionError:  # nested deeper than any checkpoint bigtrain writes
            raise DamagedCheckpoint(f"checkpoint {path} is damaged: it nests values deeper than a checkpoint "
                                    f"does") from None
        if not isinstance(digest, dict) or content != digest.get("content"):
            raise DamagedCheckpoint(f"checkpoint {path} is damaged: its content does not match the SHA-256 "
                                    f"written with it")
        if shards and digest.get("ds") is not None:
            if not isinstance(digest["ds"], dict):
                raise DamagedCheckpoint(f"checkpoint {path} is damaged: its DeepSpeed folder's digest is not a table")
            folder = os.path.splitext(path)[0] + ".ds"
            found = folder_digest(folder) if os.path.isdir(folder) else {}
            bad = sorted(k for k in digest["ds"] if digest["ds"][k] != found.get(k))
            if bad:
                raise DamagedCheckpoint(f"checkpoint {path} is damaged: {len(bad)} file(s) of its DeepSpeed folder "
                                        f"{folder} are missing or changed (first: {bad[0]})")
    return state


def checkpoint_dir(run_dir: str) -> str:
    """Where a run keeps its training-state checkpoints."""
    return os.path.join(run_dir, "checkpoints")


class CheckpointManager:
    """ckpt-<nimg>.pt files in one folder; the newest ``keep`` survive."""

    def __init__(self, folder: str, keep: int, printer: Callable[[str], None] = print):
        self.folder, self.keep, self.printer = folder, keep, printer

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
        # Temp files left by a writer that was killed mid-write are garbage: this process's own,
        # and those of a PID that is gone. (A live process's are left alone, though the run-dir lock
        # already keeps a second writer out.)
        for stale in glob.glob(os.path.join(self.folder, "ckpt-*.pt.tmp*")):
            if not pid_alive(stale.rsplit(".tmp", 1)[1]) or stale.endswith(f".tmp{os.getpid()}"):
                os.remove(stale)
        path = self.path_for(nimg)
        ds = self.shard_folder(nimg)  # written before this .pt: its files' digests go into it
        state = seal({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, ds)
        save_atomic(state, path)
        # Room for the next one? (The folder's next checkpoint is about this one's size.)
        size = os.path.getsize(path) + sum(os.path.getsize(os.path.join(ds, f)) for f in state["digest"]["ds"] or {})
        free = shutil.disk_usage(self.folder).free
        if free < size:
            self.printer(f"warning: {free / 2**20:.0f} MiB free under {self.folder}, less than the last checkpoint "
                         f"({size / 2**20:.0f} MiB): the next one may not fit")
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
        # The generator of this process's own GPU (the rank's, torch.cuda.set_device) only: a resume
        # may see fewer GPUs (srun binding one per task, smaller nodes) or its GPU at another index.
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        # Onto this process's GPU. Older checkpoints hold a state for each GPU the saving process
        # saw, its own at the index of its device: the same index here, where there is one.
        i = torch.cuda.current_device()
        torch.cuda.set_rng_state(cuda[i] if i < len(cuda) else cuda[0])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    v, keys, gauss = state["python"]
    random.setstate((v, tuple(keys), gauss))
