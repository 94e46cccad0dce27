"""Rank-0 console output: the one place that decides who prints."""
from __future__ import annotations

import os
import sys


def _rank() -> int:
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # pragma: no cover
        pass
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)


def is_rank0() -> bool:
    return _rank() == 0


def print0(*args, file=None, **kwargs) -> None:
    """print() on rank 0 only; flushes so logs under Slurm/torchrun interleave sanely."""
    if _rank() == 0:
        print(*args, file=file or sys.stdout, flush=True, **kwargs)
