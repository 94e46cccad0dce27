"""`bigtrain bench train CONFIG`: img/s, sec/kimg and memory of training iterations."""
from __future__ import annotations

import json
import time

import torch

from bigtrain.train.observe import TickStats, peak_memory_gb


def time_steps(trainer, stats: TickStats, iters: int, deadline: float | None = None) -> tuple[int, float, int]:
    """Run ``iters`` training iterations and time them by the wall clock, synchronised with the
    GPU at both ends; with a ``deadline`` (time.perf_counter()), stop after the iteration that
    passes it (at least one runs). Returns (iterations run, seconds, images)."""
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    nimg0, t0, done = trainer.progress.nimg, time.perf_counter(), 0
    while done < iters:
        trainer.train_step(stats)
        done += 1
        if deadline is not None and time.perf_counter() > deadline:
            break
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return done, time.perf_counter() - t0, trainer.progress.nimg - nimg0


def bench_train(trainer, iters: int, warmup: int) -> dict:
    """Time ``iters`` training iterations after ``warmup`` untimed ones (all phases run,
    lazy regularizers at their natural share since steps are counted from 0)."""
    stats = TickStats()
    for _ in range(warmup):
        trainer.train_step(stats)
    _, sec, nimg = time_steps(trainer, stats, iters)
    return {
        "config": trainer.cfg.run.dir, "model": trainer.cfg.model,
        "resolution": trainer.model_info["resolution"], "batch_size": trainer.cfg.train.batch_size,
        "world_size": trainer.env.world_size, "device": str(trainer.device),
        "threads": torch.get_num_threads(), "iters": iters, "warmup": warmup,
        "img_per_sec": nimg / sec, "sec_per_kimg": sec / (nimg / 1000),
        "peak_mem_gb": peak_memory_gb(trainer.device),
        "strategy": trainer.cfg.distributed.strategy, "zero_stage": trainer.cfg.distributed.zero_stage,
        "rank": trainer.env.rank,
        "bytes_per_rank": {name: trainer.strategy.memory_bytes(w) for name, w in trainer.wrapped.items()},
    }


def format_table(result: dict) -> str:
    rows = [(k, f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in result.items()]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows) + "\n" + json.dumps(result)
