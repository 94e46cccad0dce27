"""Train one run to the end: resume policy, the Trainer, teardown. Shared by `bigtrain train`
(python, torchrun, srun) and the Slurm job that `bigtrain submit` sends."""
from __future__ import annotations

import os

from bigtrain.checkpoint import resolve_resume
from bigtrain.distributed import print0
from bigtrain.train.config import TrainConfig


def train(cfg: TrainConfig, resume: str = "auto", config_source: str = "the config") -> str | None:
    """``resume``: "auto" (newest checkpoint in run.dir, if any), "none" (refuse a run dir that
    holds checkpoints), or a checkpoint file/folder. Returns the final checkpoint (rank 0).
    Raises ``Interrupted`` after the checkpoint a stop signal asks for."""
    from bigtrain.train.loop import Trainer

    newest = resolve_resume("auto", cfg.run.dir)
    if resume == "none" and newest:
        raise ValueError(f"run dir {cfg.run.dir} already holds checkpoints; resume with --resume auto "
                         f"or choose a new run.dir=...")
    start = None if resume == "none" else newest if resume == "auto" else resolve_resume(resume, cfg.run.dir)
    trainer = Trainer(cfg, resume=start, config_source=config_source)
    try:
        if trainer.progress.nimg >= cfg.train.total_kimg * 1000:
            print0(f"training already complete: kimg {trainer.progress.kimg:.1f} >= train.total_kimg="
                   f"{cfg.train.total_kimg}; newest checkpoint {newest}")
            return newest
        path = trainer.run()
        # Every rank finished: leave together, so no rank tears its process group down while
        # another still talks to it (a rank that crashed skips this and does not wait).
        trainer.strategy.barrier()
    finally:
        trainer.strategy.teardown()
    if path:
        print0(f"done: final checkpoint {path}; samples in {os.path.join(cfg.run.dir, 'samples')}")
    return path
