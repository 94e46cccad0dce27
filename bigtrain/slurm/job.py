"""The job `bigtrain submit` sends: every Slurm task runs ``TrainJob()``. Rank and rendezvous come
from the Slurm environment (DistEnv), the run resumes from its newest checkpoint, and on SIGUSR2
(Slurm's warning before the time limit, submitit's preemption signal) every rank finishes its
step, rank 0 writes a checkpoint and puts the job back in the queue, up to a limit."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import submitit

from bigtrain.distributed import DistEnv, print0
from bigtrain.train.config import TrainConfig


class RequeueLimitReached(RuntimeError):
    pass


def attempts_path(run_dir: str) -> str:
    return os.path.join(run_dir, "slurm", "attempts.jsonl")


def read_attempts(run_dir: str) -> list[dict]:
    if not os.path.exists(attempts_path(run_dir)):
        return []
    with open(attempts_path(run_dir)) as f:
        return [json.loads(line) for line in f if line.strip()]


def record_attempt(run_dir: str, event: str, **fields) -> None:
    """One line per event of the job's life (start, completed, requeued, stopped, limit), written by
    rank 0 into the run directory: what `bigtrain submit --status` reads."""
    line = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "job": os.environ.get("SLURM_JOB_ID"),
            "attempt": int(os.environ.get("SLURM_RESTART_COUNT", "0")) + 1, **fields}
    os.makedirs(os.path.dirname(attempts_path(run_dir)), exist_ok=True)
    with open(attempts_path(run_dir), "a") as f:
        f.write(json.dumps(line) + "\n")


class TrainJob(submitit.helpers.Checkpointable):
    """Picklable: the resolved config travels with the job, so later edits to the YAML file do not
    change a queued or requeued run. (submitit calls ``checkpoint`` only for a signal that lands
    outside the training loop, e.g. during start-up; the loop handles its own.)"""

    def __init__(self, cfg: TrainConfig, config_source: str, max_requeues: int):
        self.cfg, self.config_source, self.max_requeues = cfg, config_source, max_requeues

    def __call__(self) -> str | None:
        from bigtrain.train.loop import Interrupted
        from bigtrain.train.run import train

        env = DistEnv.from_environ()
        attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0")) + 1
        if not self.cfg.run.num_threads and os.environ.get("SLURM_CPUS_PER_TASK"):
            self.cfg.run.num_threads = int(os.environ["SLURM_CPUS_PER_TASK"])
        run_dir = self.cfg.run.dir
        print0(f"slurm job {os.environ.get('SLURM_JOB_ID')} attempt {attempt}: {env.world_size} rank(s) on "
               f"{os.environ.get('SLURM_JOB_NODELIST', socket.gethostname())}, rendezvous "
               f"{env.master_addr}:{env.master_port}; run dir {run_dir}")
        if env.is_main:
            record_attempt(run_dir, "start", world_size=env.world_size, nodes=os.environ.get("SLURM_JOB_NODELIST"))
        try:
            path = train(self.cfg, "auto", self.config_source)
        except Interrupted as e:
            if env.is_main:
                self._after_interrupt(e)
            # Not a result: submitit writes none, and the requeued attempt runs the job again. The
            # other ranks leave with 0 on a requeue so that a cluster with KillOnBadExit does not
            # stop rank 0 before it has requeued.
            raise SystemExit(0 if e.requeue and not env.is_main else 128 + e.signum)
        if env.is_main:
            record_attempt(run_dir, "completed", checkpoint=path)
        return path

    def _after_interrupt(self, e) -> None:
        run_dir, job = self.cfg.run.dir, os.environ.get("SLURM_JOB_ID")
        # Our own requeues of this job, not SLURM_RESTART_COUNT: Slurm's preemption requeues count there too.
        requeues_done = sum(1 for ev in read_attempts(run_dir) if ev.get("job") == job and ev["event"] == "requeued")
        if not e.requeue:
            # SIGTERM alone: scancel, or Slurm preempting/requeueing the job itself.
            record_attempt(run_dir, "stopped", signal=e.signum, checkpoint=e.checkpoint)
            print0(f"stopped by signal {e.signum} with checkpoint {e.checkpoint}; not requeueing (a preempted "
                   f"job is requeued by Slurm itself; to continue by hand, submit the same run.dir again)")
            return
        if requeues_done >= self.max_requeues:
            record_attempt(run_dir, "limit", signal=e.signum, checkpoint=e.checkpoint)
            raise RequeueLimitReached(
                f"job {job} was requeued {requeues_done} time(s), the limit (--max-requeues "
                f"{self.max_requeues}): not requeueing again. The checkpoint {e.checkpoint} is safe; submit the "
                f"same run.dir again to continue, with a larger --time or --max-requeues if this is expected")
        print0(f"requeueing job {job} (requeue {requeues_done + 1} of at most {self.max_requeues}); it resumes "
               f"from {e.checkpoint}")
        try:
            subprocess.run(["scontrol", "requeue", str(job)], check=True, timeout=60, capture_output=True, text=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as err:
            record_attempt(run_dir, "stopped", signal=e.signum, checkpoint=e.checkpoint)
            detail = getattr(err, "stderr", None) or err
            raise RuntimeError(f"scontrol requeue {job} failed ({str(detail).strip()}); the checkpoint "
                               f"{e.checkpoint} is safe: submit the same run.dir again to continue") from None
        # Written after Slurm accepted it (the job may be killed any moment now).
        record_attempt(run_dir, "requeued", signal=e.signum, checkpoint=e.checkpoint)
