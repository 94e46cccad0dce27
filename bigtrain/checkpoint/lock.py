"""One process per run dir: the training's rank 0 holds an flock on ``RUN_DIR/run.lock`` for the
life of the run, the file naming its host and PID. A second ``bigtrain train`` (or ``submit``) on
the same dir fails at once, naming the dir and the holder. The kernel drops an flock when its
process ends however it ends (SIGKILL included), so a killed run, a Slurm requeue and a torchrun
restart find the dir free."""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from typing import Iterator

LOCK_NAME = "run.lock"


class RunDirBusy(Exception):
    """Another process holds the run dir (exit code 7)."""


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        text = ""
    return text or "another process (it has not written its name yet)"


def _try_lock(run_dir: str) -> int:
    """The locked file descriptor; RunDirBusy when another process holds it."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirBusy(f"run dir {run_dir} is in use by {_holder(path)} (it holds {path}); wait for that run "
                         f"to end or stop it, or choose another run.dir=...") from None
    return fd


@contextlib.contextmanager
def hold_run_dir(run_dir: str) -> Iterator[None]:
    """Hold ``run_dir`` for the block; RunDirBusy at once when another process holds it."""
    fd = _try_lock(run_dir)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # drops the lock; the file stays (removing it would race a process opening it)


def check_run_dir_free(run_dir: str) -> None:
    """RunDirBusy when a process holds ``run_dir`` now (for `bigtrain submit`, before it queues a job)."""
    if os.path.isfile(os.path.join(run_dir, LOCK_NAME)):
        os.close(_try_lock(run_dir))
