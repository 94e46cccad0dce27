"""The checkpoint format in one place: what a bigtrain checkpoint holds (typed, versioned), how it
is written (sealed with its digest) and how it is read (weights only, digest checked, then every
field's type and bounds checked before anything is built from it).

The trainer (save, resume), generate, export, eval, the growing schedule and the training metrics
read checkpoints through :class:`Checkpoint` only; no other module names a checkpoint's keys. The
on-disk layout is format version 1, unchanged, so checkpoints of earlier bigtrain load as before.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable

import torch

from .state import FORMAT, FORMAT_VERSION, CheckpointManager, DamagedCheckpoint, checkpoint_dir, load_state, save_atomic, seal

KINDS = ("train", "best")  # resumable training state; G_ema of the best metric value so far
PROGRESS_KEYS = ("nimg", "step", "tick", "tick_start_nimg", "nonfinite_total", "nonfinite_run")

# Sizes a network is built from, bounded before it is built (checkpoints and export configs).
SIZE_BOUNDS = (("resolution", 4, 8192, "a power of 2 from 4 to 8192"),
               ("channels", 1, 4, "an integer from 1 to 4"),
               ("c_dim", 0, 1_000_000, "an integer from 0 to 1000000"))


def size_problem(values: dict) -> str | None:
    """The first of resolution, channels, c_dim in ``values`` out of SIZE_BOUNDS, as "key 'K' must
    be ..., got V"; None when all three are in bounds."""
    for key, low, high, what in SIZE_BOUNDS:
        v = values.get(key)
        if (not _is_int(v) or not low <= v <= high or (key == "resolution" and v & (v - 1))):
            return f"key '{key}' must be {what}, got {v!r}"
    return None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclasses.dataclass
class Checkpoint:
    """One checkpoint. ``kind`` "train" carries everything resume needs; "best" (checkpoints/best.pt)
    carries G_ema, its config and its scores, for generate, eval and export."""
    kind: str
    config: dict  # the TrainConfig, as a dict
    model_info: dict  # family, resolution, channels, c_dim, label_names
    G_ema: dict[str, torch.Tensor]
    progress: dict  # the trainer's Progress fields (nimg, tick, step, ...)
    stage: dict | None = None  # the growing Stage the last step ran at (None: written before it was kept)
    strategy: dict | None = None  # per net (G, D): the distributed strategy's state
    loss: dict | None = None
    rng: list | dict | None = None  # per rank (older checkpoints: one dict, rank 0's)
    data: dict | None = None  # the data reader's position
    best: dict | None = None  # kind "best": {"metric", "value"}
    metrics: dict | None = None  # kind "best": every metric's value

    @property
    def nimg(self) -> int:
        return self.progress["nimg"]

    # ------------------------------------------------------------------ writing
    def to_state(self) -> dict:
        """The dict torch.save writes (format version 1's layout)."""
        state = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind, "config": self.config,
                 "model_info": self.model_info, "nets": {"G_ema": self.G_ema}, "progress": self.progress,
                 "stage": self.stage}
        optional = {"strategy": self.strategy, "loss": self.loss, "rng": self.rng, "data": self.data,
                    "best": self.best, "metrics": self.metrics}
        state.update({k: v for k, v in optional.items() if v is not None})
        return state

    def write(self, path: str) -> None:
        """Atomically, sealed with its digest (for files without a DeepSpeed folder: best.pt;
        training checkpoints go through CheckpointManager.save, which seals the folder too)."""
        save_atomic(seal(self.to_state()), path)

    # ------------------------------------------------------------------ reading
    @classmethod
    def read(cls, path: str, kind: str | None = None) -> "Checkpoint":
        """Load ``path`` (weights only, digest checked) and check every field; ``kind`` "train"
        refuses a best.pt with a message saying what it is for."""
        ckpt = cls.from_state(load_state(path, shards=kind == "train"), path)
        if kind == "train" and ckpt.kind == "best":
            raise ValueError(f"{path} is a best-metric snapshot: it holds G_ema only (no D, no optimizer state), "
                             f"for generate, eval and export; resume from a ckpt-*.pt in the same folder")
        return ckpt

    @classmethod
    def from_state(cls, state: dict, path: str) -> "Checkpoint":
        def bad(field: str, want: str, got: Any = None):
            shown = f", got {type(got).__name__} {got!r}"[:120] if got is not None else ""
            raise DamagedCheckpoint(f"checkpoint {path}: '{field}' must be {want}{shown}")

        kind = state.get("kind", "train")
        if kind not in KINDS:
            bad("kind", f"one of {KINDS}", kind)
        for field in ("config", "model_info", "nets", "progress"):
            if not isinstance(state.get(field), dict):
                bad(field, "a dict", state.get(field))
        info = state["model_info"]
        if not isinstance(info.get("family"), str):
            bad("model_info.family", "a model family name", info.get("family"))
        names = info.get("label_names")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            bad("model_info.label_names", "a list of class names", names)
        problem = size_problem(info)
        if problem:
            raise DamagedCheckpoint(f"checkpoint {path}: model_info {problem}")
        g = state["nets"].get("G_ema")
        if not isinstance(g, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in g.items()):
            bad("nets.G_ema", "a dict of tensors")
        progress = state["progress"]
        for key, value in progress.items():
            if key not in PROGRESS_KEYS:
                bad("progress", f"a dict of {', '.join(PROGRESS_KEYS)}", key)
            if not _is_int(value) or value < 0:
                bad(f"progress.{key}", "an integer >= 0", value)
        if "nimg" not in progress:
            bad("progress.nimg", "present")
        stage = state.get("stage")
        if stage is not None:
            if not isinstance(stage, dict) or set(stage) != {"resolution", "alpha", "batch_size", "g_lr", "d_lr"}:
                bad("stage", "a dict of resolution, alpha, batch_size, g_lr, d_lr")
            if not (_is_int(stage["resolution"]) and _is_int(stage["batch_size"]) and stage["batch_size"] > 0
                    and all(_is_number(stage[k]) for k in ("alpha", "g_lr", "d_lr"))):
                bad("stage", "integer resolution and batch_size, finite alpha and lrs", stage)
        if kind == "train":
            for field in ("strategy", "loss", "data"):
                if not isinstance(state.get(field), dict):
                    bad(field, "a dict", state.get(field))
            if not isinstance(state.get("rng"), (list, dict)):
                bad("rng", "a list (one generator state per rank)", state.get("rng"))
        best = state.get("best")
        if best is not None and not (isinstance(best, dict) and isinstance(best.get("metric"), str)
                                     and _is_number(best.get("value"))):
            bad("best", "a dict of metric (a name) and value (a finite number)", best)
        return cls(kind=kind, config=state["config"], model_info=info, G_ema=g, progress=progress,
                   stage=stage, strategy=state.get("strategy"), loss=state.get("loss"), rng=state.get("rng"),
                   data=state.get("data"), best=best, metrics=state.get("metrics"))


def newest_intact(run_dir: str, warn: Callable[[str], None] = print, set_aside: bool = False) -> str | None:
    """The path of :func:`newest_intact_checkpoint`, or None."""
    found = newest_intact_checkpoint(run_dir, warn, set_aside)
    return found[0] if found else None


def newest_intact_checkpoint(run_dir: str, warn: Callable[[str], None] = print,
                             set_aside: bool = False) -> tuple[str, Checkpoint] | None:
    """The newest checkpoint of the run dir that loads and matches its digest (its DeepSpeed folder
    included); each newer one that does not is named in a warning (a truncated or damaged file is
    skipped, not fatal). ``set_aside`` (rank 0 of a resuming run): each skipped one is renamed
    ``*.pt.damaged``, so that it is neither "the newest" for later commands nor counted by the
    rotation that keeps the newest ``checkpoint.keep``."""
    for path in reversed(CheckpointManager(checkpoint_dir(run_dir), 1).list()):
        try:
            return path, Checkpoint.read(path, kind="train")  # read once: resume uses it as it is
        except FileNotFoundError:
            continue  # set aside by rank 0 meanwhile
        except DamagedCheckpoint as e:
            if set_aside:
                os.replace(path, path + ".damaged")
                warn(f"warning: {e}; renamed it {os.path.basename(path)}.damaged and took the one before")
            else:
                warn(f"warning: {e}; skipping it for the one before")
    return None
