"""`bigtrain submit`, the login-node side: check the config against the resources, build the
sbatch script with submitit (one task per GPU, SIGUSR2 before the time limit), submit it and
record the job in the run directory; `--status` reads it back."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from bigtrain.checkpoint.lock import check_run_dir_free
from bigtrain.config import ConfigError
from bigtrain.distributed.strategy import check_world_size
from bigtrain.train.config import TrainConfig

from .job import TrainJob, read_attempts


class SubmitError(RuntimeError):
    """Slurm refused the job (or is not reachable); the message is Slurm's own."""


@dataclasses.dataclass
class Resources:
    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int | None = None  # default: one per GPU
    partition: str | None = None
    time: str = "24:00:00"
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    mem: str | None = None
    cpus_per_task: int | None = None
    max_requeues: int = 10
    signal_delay_s: int = 120
    job_name: str | None = None

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or self.gpus_per_node

    def check(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"--nodes {self.nodes}: must be >= 1")
        if self.gpus_per_node < 0:
            raise ValueError(f"--gpus-per-node {self.gpus_per_node}: must be >= 0")
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise ValueError(f"--tasks-per-node {self.tasks_per_node} with --gpus-per-node {self.gpus_per_node}: "
                             f"bigtrain runs one task per GPU")
        if self.tasks < 1:
            raise ValueError("--gpus-per-node 0 (CPU nodes) needs --tasks-per-node N")
        if self.max_requeues < 0:
            raise ValueError(f"--max-requeues {self.max_requeues}: must be >= 0")
        if self.signal_delay_s >= parse_time(self.time) * 60:
            raise ValueError(f"--signal-delay {self.signal_delay_s} s is not shorter than --time {self.time}: the "
                             f"time-limit signal would come at the start")


def parse_time(text: str) -> int:
    """Slurm's time formats -> whole minutes (seconds round up): M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"--time {text!r}: use minutes, H:MM:SS or D-HH:MM:SS")
    days, a, b, c = m.groups()
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # H:M:S
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    else:  # M or M:S
        seconds = int(a) * 60 + int(b or 0)
    if seconds <= 0:
        raise ValueError(f"--time {text!r}: must be > 0")
    return -(-seconds // 60)


def sbatch_parameters(res: Resources, run_dir: str) -> dict:
    """submitit's SlurmExecutor parameters. Slurm sends SIGUSR2 ``signal_delay_s`` before the time
    limit; ``--requeue`` lets the job go back in the queue even where the cluster default is not to."""
    params = {"nodes": res.nodes, "ntasks_per_node": res.tasks, "time": parse_time(res.time),
              "job_name": res.job_name or f"bigtrain-{os.path.basename(run_dir.rstrip('/'))}",
              "signal_delay_s": res.signal_delay_s, "additional_parameters": {"requeue": True}}
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    for key in ("partition", "account", "qos", "constraint", "cpus_per_task"):
        if getattr(res, key) is not None:
            params[key] = getattr(res, key)
    if res.mem is not None:  # as written (64G, 500M, 0 = all): not submitit's GB conversion
        params["additional_parameters"]["mem"] = res.mem
    return params


def slurm_folder(run_dir: str) -> str:
    return os.path.join(run_dir, "slurm")


def jobs_path(run_dir: str) -> str:
    return os.path.join(slurm_folder(run_dir), "jobs.jsonl")


def _jobs(run_dir: str) -> list[dict]:
    if not os.path.exists(jobs_path(run_dir)):
        return []
    with open(jobs_path(run_dir)) as f:
        return [json.loads(line) for line in f if line.strip()]


def _queued_state(job_id: str) -> str | None:
    """"PENDING (Priority)", "RUNNING (None)", ... while Slurm still has the job in its queue, else None."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T (%r)"], capture_output=True, text=True,
                             timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def check_fits(cfg: TrainConfig, res: Resources, source: str) -> None:
    """What the job would only find out after queueing: a world size the config cannot run."""
    world = res.nodes * res.tasks
    try:
        check_world_size(cfg.distributed.strategy, world, f"{res.nodes} node(s) x {res.tasks} task(s)")
    except ValueError as e:
        raise ConfigError(f"{e} ({source})") from None
    cfg.train.rounds(world, source)


def submit(cfg: TrainConfig, source: str, res: Resources, dry_run: bool = False, out=print) -> str | None:
    """Submit ``cfg`` (already resolved); returns the job id (None for a dry run)."""
    import submitit
    from submitit.slurm.slurm import _make_sbatch_string

    res.check()
    check_fits(cfg, res, source)
    cfg.run.dir = run_dir = os.path.abspath(cfg.run.dir)  # the job's working directory may differ
    folder = slurm_folder(run_dir)
    params = sbatch_parameters(res, run_dir)
    world = res.nodes * res.tasks
    if dry_run:
        # The script submitit would hand to sbatch (same function, same parameters).
        command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(folder)}"
        out(f"# dry run: not submitted. {world} rank(s); run dir {run_dir}; logs in {folder}")
        out(_make_sbatch_string(command=command, folder=folder, **params))
        return None
    slurm = shutil.which("sbatch") and shutil.which("srun")
    # A job of this run dir still queued or running is named first: once it runs it also holds the
    # run dir's lock, whose message names only a host and PID.
    for job in _jobs(run_dir)[-1:] if slurm else ():
        state = _queued_state(job["job_id"])
        if state:
            raise SubmitError(f"run dir {run_dir} belongs to job {job['job_id']}, which is {state}; "
                              f"scancel {job['job_id']} first, or choose another run.dir=...")
    check_run_dir_free(run_dir)  # a training started by hand (bigtrain train, torchrun) holds it
    if not slurm:
        raise SubmitError("no Slurm client here: sbatch/srun are not on PATH (--dry-run works without them)")
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=res.max_requeues)
    executor.update_parameters(**params)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr; we report it once
            job = executor.submit(TrainJob(cfg, source, res.max_requeues))
    except submitit.core.utils.FailedJobError as e:
        raise SubmitError("Slurm refused the job: " + _slurm_message(str(e))) from None
    os.makedirs(folder, exist_ok=True)
    with open(jobs_path(run_dir), "a") as f:
        f.write(json.dumps({"job_id": job.job_id, "submitted": datetime.datetime.now().isoformat(timespec="seconds"),
                            "config": source, "nodes": res.nodes, "tasks_per_node": res.tasks,
                            "gpus_per_node": res.gpus_per_node, "max_requeues": res.max_requeues,
                            "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}) + "\n")
    out(f"submitted job {job.job_id}: {res.nodes} node(s) x {res.tasks} task(s) = {world} rank(s)")
    out(f"run dir:  {run_dir}")
    out(f"logs:     {job.paths.stdout} (rank 0; .err beside it, one pair per rank)")
    out(f"status:   bigtrain submit --status {run_dir}")
    return job.job_id


def _slurm_message(text: str) -> str:
    """sbatch's own error lines out of submitit's report, e.g. 'invalid partition specified: gpu'."""
    lines = [ln.strip() for ln in text.splitlines() if "error" in ln.lower() and "sbatch" in ln.lower()]
    return "; ".join(dict.fromkeys(lines)) or text.strip()


def status(run_dir: str, out=print) -> str:
    """Print the newest job's Slurm state, its attempts, the newest checkpoint and the logs; returns
    the state."""
    import submitit

    from bigtrain.checkpoint import resolve_resume

    run_dir = os.path.abspath(run_dir)
    jobs = _jobs(run_dir)
    if not jobs:
        raise FileNotFoundError(f"{jobs_path(run_dir)} not found: no job was submitted with run.dir={run_dir}")
    job = jobs[-1]
    # The queue's view while the job is queued (with the reason a pending job waits), else accounting's.
    queued = _queued_state(job["job_id"])
    state = queued or submitit.SlurmJob(folder=slurm_folder(run_dir), job_id=job["job_id"]).state
    out(f"job {job['job_id']}: {state} ({job['nodes']} node(s) x {job['tasks_per_node']} task(s), submitted "
        f"{job['submitted']}, at most {job['max_requeues']} requeue(s))")
    for e in read_attempts(run_dir):
        if e.get("job") == job["job_id"]:
            extra = {k: v for k, v in e.items() if k not in ("event", "time", "job", "attempt")}
            out(f"  attempt {e['attempt']}  {e['time']}  {e['event']:<9s} "
                + " ".join(f"{k}={v}" for k, v in extra.items()))
    newest = resolve_resume("auto", run_dir)
    out(f"newest checkpoint: {newest or '(none yet)'}")
    out(f"logs: {job['stdout']}  {job['stderr']}")
    return state
