"""Benchmarks: measured figures, never assertions. ``bigtrain bench train CONFIG``."""
from __future__ import annotations

import json
import time

import torch

from bigtrain.train.observe import TickStats, peak_memory_gb


def bench_train(trainer, iters: int, warmup: int) -> dict:
    """Time ``iters`` training iterations after ``warmup`` untimed ones (all phases run,
    lazy regularizers at their natural share since steps are counted from 0)."""
    stats = TickStats()
    for _ in range(warmup):
        trainer.train_step(stats)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    nimg0, t0 = trainer.progress.nimg, time.perf_counter()
    for _ in range(iters):
        trainer.train_step(stats)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    sec = time.perf_counter() - t0
    nimg = trainer.progress.nimg - nimg0
    return {
        "config": trainer.cfg.run.dir, "model": trainer.cfg.model,
        "resolution": trainer.model_info["resolution"], "batch_size": trainer.cfg.train.batch_size,
        "world_size": trainer.env.world_size, "device": str(trainer.device),
        "threads": torch.get_num_threads(), "iters": iters, "warmup": warmup,
        "img_per_sec": nimg / sec, "sec_per_kimg": sec / (nimg / 1000),
        "peak_mem_gb": peak_memory_gb(trainer.device),
    }


def format_table(result: dict) -> str:
    rows = [(k, f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in result.items()]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows) + "\n" + json.dumps(result)
