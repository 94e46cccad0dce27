"""Train one run to the end: resume policy, the Trainer, teardown. Shared by `bigtrain train`
(python, torchrun, srun) and the Slurm job that `bigtrain submit` sends."""
from __future__ import annotations

import contextlib
import gc
import os

from bigtrain.checkpoint import checkpoint_dir, resolve_resume
from bigtrain.checkpoint.schema import newest_intact, newest_intact_checkpoint
from bigtrain.checkpoint.lock import hold_run_dir
from bigtrain.distributed import print0
from bigtrain.train.config import TrainConfig


def train(cfg: TrainConfig, resume: str = "auto", config_source: str = "the config") -> str | None:
    """``resume``: "auto" (newest checkpoint in run.dir, if any), "none" (refuse a run dir that
    holds checkpoints), or a checkpoint file/folder. Returns the final checkpoint (rank 0).
    Raises ``Interrupted`` after the checkpoint a stop signal asks for."""
    from bigtrain.distributed import DistEnv

    # Rank 0, which writes the checkpoints, holds the run dir until the run ends: a second run on
    # it fails here, before it reads or writes anything (RunDirBusy, exit code 7).
    held = hold_run_dir(cfg.run.dir) if DistEnv.from_environ().rank == 0 else contextlib.nullcontext()
    try:
        with held:
            return _train(cfg, resume, config_source)
    except OSError as e:
        if e.errno is None:  # bigtrain's own messages (a data source that does not exist, ...)
            raise
        # Disk full, permission denied, a folder gone: one line naming what failed and what is left.
        try:
            newest = newest_intact(cfg.run.dir, warn=lambda _: None)
        except (OSError, ValueError):
            newest = None  # the folder itself unreadable: the error above is the one to show
        what = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        raise RunIOError(f"I/O error, training stopped: {what}; the newest intact checkpoint is "
                         f"{newest or 'none'}" + (" (resume from it once the cause is fixed)" if newest else "")) from None


class RunIOError(Exception):
    """Training stopped because a read or write of the file system failed (exit code 8)."""


def _train(cfg: TrainConfig, resume: str, config_source: str) -> str | None:
    from bigtrain.distributed import DistEnv
    from bigtrain.train.loop import Trainer

    newest = resolve_resume("auto", cfg.run.dir)
    if resume == "none" and newest:
        raise ValueError(f"run dir {cfg.run.dir} already holds checkpoints; resume with --resume auto "
                         f"or choose a new run.dir=...")
    if resume == "auto":
        # The newest checkpoint that loads and matches its digest; a truncated or damaged newer
        # one is named in a warning and passed over.
        found = newest_intact_checkpoint(cfg.run.dir, print0, set_aside=DistEnv.from_environ().rank == 0)
        start, loaded = found or (None, None)
        newest = start
        if start is None and resolve_resume("auto", cfg.run.dir):
            raise ValueError(f"no checkpoint in {checkpoint_dir(cfg.run.dir)} is intact (see the warnings above); "
                             f"resume from another with --resume PATH, or start over in another run.dir=...")
    else:
        start, loaded = None if resume == "none" else resolve_resume(resume, cfg.run.dir), None
    trainer = Trainer(cfg, resume=start, config_source=config_source, loaded=loaded)
    strategy = trainer.strategy
    try:
        if trainer.progress.nimg >= cfg.train.total_kimg * 1000:
            print0(f"training already complete: kimg {trainer.progress.kimg:.1f} >= train.total_kimg="
                   f"{cfg.train.total_kimg}; newest checkpoint {newest}")
            return newest
        path = trainer.run()
        # Every rank finished: leave together, so no rank tears its process group down while
        # another still talks to it (a rank that crashed skips this and does not wait).
        strategy.barrier()
    finally:
        # Free the wrapped networks (DDP's reducer and the gloo work objects it keeps) while the
        # interpreter is whole, then the process group. Freed during interpreter exit instead, such
        # a work object needs the GIL that is going away and the rank aborts after a finished run
        # ("terminate called without an active exception", SIGABRT; seen under load in CI).
        del trainer
        gc.collect()
        strategy.teardown()
    if path:
        print0(f"done: final checkpoint {path}; samples in {os.path.join(cfg.run.dir, 'samples')}")
    return path
