"""`bigtrain submit` and launch/slurm/train.sbatch on a real Slurm cluster: the project's own
private cluster (launch/slurm/local/start.sh: munge, slurmdbd + mariadb, slurmctld and two
slurmd as two nodes on this machine), started once for this module. Jobs are CPU-only: nodes
have no GPUs, so `--gpus-per-node 0 --tasks-per-node N`."""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import run_cli, run_torchrun, tiny_config, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LOCAL = os.environ.get("SLURM_LOCAL_DIR", "/tmp/local-slurm")
CONF = f"{LOCAL}/etc/slurm.conf"
CPU = ["--gpus-per-node", "0", "--time", "10"]


def _slurm(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=60,
                          env=dict(os.environ, SLURM_CONF=CONF))


def _nodes_up() -> bool:
    if not shutil.which("sinfo") or not os.path.exists(CONF):
        return False
    out = _slurm("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split()
    return out[0::2] == ["node1", "node2"] and all(s in ("idle", "mixed", "allocated") for s in out[1::2])


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if _nodes_up():  # a developer's cluster from an earlier run: use it and leave it running
        os.environ["SLURM_CONF"] = CONF
        yield
        return
    if os.geteuid() != 0:
        message = "the private Slurm cluster (launch/slurm/local/start.sh) needs root to install and run its daemons"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    env = dict(os.environ, SLURM_NUM_NODES="2", SLURM_LOCAL_DIR=LOCAL)
    start = subprocess.run(["bash", str(REPO / "launch/slurm/local/start.sh")], env=env, capture_output=True,
                           text=True, timeout=900)
    assert start.returncode == 0, f"local Slurm cluster did not start:\n{start.stderr[-3000:]}"
    os.environ["SLURM_CONF"] = CONF
    yield
    subprocess.run(["bash", str(REPO / "launch/slurm/local/stop.sh")], env=env, capture_output=True, timeout=300)


def wait_for_job(job_id: str, timeout: float = 420) -> str:
    """Wait until Slurm no longer has the job queued (requeues keep it queued); its final state."""
    deadline = time.time() + timeout
    while _slurm("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.strip():
        assert time.time() < deadline, f"job {job_id} still queued after {timeout} s"
        time.sleep(1)
    for _ in range(30):  # accounting lags the controller by a moment
        state = _slurm("sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State").stdout.split()
        if state and state[0] not in ("RUNNING", "PENDING", "REQUEUED", "COMPLETING"):
            return state[0]
        time.sleep(1)
    raise AssertionError(f"sacct has no final state for job {job_id}")


def wait_for_checkpoint(run_dir: Path, min_nimg: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not any(nimg(p) >= min_nimg for p in glob.glob(f"{run_dir}/checkpoints/ckpt-*.pt")):
        assert time.time() < deadline, f"no checkpoint at >= {min_nimg} images in {run_dir} after {timeout} s"
        time.sleep(0.5)


def nimg(path: str) -> int:
    return int(re.search(r"ckpt-(\d+)\.pt$", path).group(1))


def newest(run_dir: Path) -> str:
    return max(glob.glob(f"{run_dir}/checkpoints/ckpt-*.pt"), key=nimg)


def events(run_dir: Path) -> list[dict]:
    with open(run_dir / "slurm" / "attempts.jsonl") as f:
        return [json.loads(line) for line in f]


def logs(run_dir: Path, job_id: str) -> str:
    return "".join(Path(p).read_text() for p in sorted(glob.glob(f"{run_dir}/slurm/{job_id}_*_log.*")))


def submit(tmp_path: Path, name: str, *args: str, total_kimg: float = 0.128, **sections) -> tuple[Path, str]:
    run_dir = tmp_path / name
    cfg = tiny_config(run_dir, distributed={"strategy": "ddp"}, run={"dir": str(run_dir), "seed": 1, "num_threads": 1},
                      **sections)
    cfg["train"]["total_kimg"] = total_kimg
    r = run_cli(["submit", write_config(tmp_path / f"{name}.yaml", cfg), *args])
    assert r.returncode == 0, r.stderr
    job_id = re.search(r"submitted job (\d+)", r.stdout).group(1)
    return run_dir, job_id


def g_ema(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["nets"]["G_ema"]


@pytest.fixture(scope="module", autouse=True)
def limit_job(cluster, tmp_path_factory):
    """The time-limit test's job, submitted before the module's first test: Slurm signals it
    30-60 s after it starts (its checks run every 30 s), and that wait overlaps the tests before
    it. One task, --time 2, --signal-delay 60, --max-requeues 0: it trains until the signal (its
    speed does not matter), and ranks stopping together is the preemption tests' business. The
    job takes 1 of node1's or node2's 2 CPUs, so the 2-task jobs still fit on the other node."""
    run_dir, job = submit(tmp_path_factory.mktemp("limit"), "run", "--gpus-per-node", "0", "--tasks-per-node", "1",
                          "--time", "2", "--signal-delay", "60", "--max-requeues", "0", total_kimg=100)
    yield run_dir, job
    _slurm("scancel", job, check=False)  # a run of a few of these tests may end before it does


def test_submit_one_node_two_tasks_trains_to_completion(tmp_path):
    run_dir, job = submit(tmp_path, "run", *CPU, "--tasks-per-node", "2")
    # The run dir is taken while the job is queued or running.
    again = run_cli(["submit", str(tmp_path / "run.yaml"), *CPU, "--tasks-per-node", "2"])
    assert again.returncode == 5 and f"belongs to job {job}" in again.stderr

    assert wait_for_job(job) == "COMPLETED", logs(run_dir, job)
    assert os.path.exists(run_dir / "checkpoints" / "ckpt-000000000128.pt")
    out = logs(run_dir, job)  # on whichever node limit_job left free
    assert re.search(r"2 rank\(s\) on node[12]\b", out) and "batch 8 = 2 rank(s) x 4" in out
    assert [e["event"] for e in events(run_dir)] == ["start", "completed"]
    status = run_cli(["submit", "--status", str(run_dir)])
    assert status.returncode == 0, status.stderr
    assert f"job {job}: COMPLETED" in status.stdout and "ckpt-000000000128.pt" in status.stdout


TOTAL = 512  # images in the preempted runs and the straight one they must equal


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """2 ranks straight through TOTAL images under torchrun: the run the preempted jobs must equal."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = tiny_config(tmp / "run", distributed={"strategy": "ddp"}, run={"dir": str(tmp / "run"), "seed": 1,
                                                                         "num_threads": 1})
    cfg["train"]["total_kimg"] = TOTAL / 1000
    r = run_torchrun(2, ["train", write_config(tmp / "straight.yaml", cfg)])
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "run"


def wait_for_events(run_dir: Path, count: int, timeout: float = 300) -> list[dict]:
    deadline = time.time() + timeout
    while not (run_dir / "slurm" / "attempts.jsonl").exists() or len(events(run_dir)) < count:
        assert time.time() < deadline, f"fewer than {count} events in {run_dir}/slurm/attempts.jsonl after {timeout} s"
        time.sleep(0.5)
    return events(run_dir)


def test_preemption_checkpoints_requeues_and_resumes_exactly(tmp_path, straight):
    """One job preempted twice, both ways: submitit's interrupt (SIGTERM then SIGUSR2: the job
    requeues itself), then `scontrol requeue` in the second attempt (SIGTERM: Slurm requeues it).
    Each time the ranks finish the step, checkpoint, and the next attempt resumes there. Final
    weights equal an uninterrupted run's, so no step was lost or repeated."""
    import submitit

    run_dir, job = submit(tmp_path, "run", *CPU, "--tasks-per-node", "2", total_kimg=TOTAL / 1000)
    wait_for_checkpoint(run_dir, 64)
    submitit.SlurmJob(folder=run_dir / "slurm", job_id=job)._interrupt()
    first = nimg(wait_for_events(run_dir, 2)[1]["checkpoint"])
    # The second attempt has resumed and trained past the first stop: requeue it from outside.
    wait_for_checkpoint(run_dir, first + 32)
    _slurm("scontrol", "requeue", job)
    assert wait_for_job(job) == "COMPLETED", logs(run_dir, job)

    ev = events(run_dir)
    assert [e["event"] for e in ev] == ["start", "requeued", "start", "stopped", "start", "completed"]
    assert [ev[2]["attempt"], ev[4]["attempt"]] == [2, 3]
    stops = [nimg(ev[1]["checkpoint"]), nimg(ev[3]["checkpoint"])]
    assert 64 <= stops[0] < stops[1] < TOTAL and stops[0] % 8 == stops[1] % 8 == 0
    out = logs(run_dir, job)
    for e, stop in zip((ev[1], ev[3]), stops):
        assert f"resumed from {e['checkpoint']} at kimg {stop / 1000:.3f}" in out
    assert nimg(newest(run_dir)) == TOTAL

    # TensorBoard: one curve across the three attempts, each tick logged once, ending at the total.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [s.step for s in acc.Scalars("Progress/kimg")]
    assert len(glob.glob(f"{run_dir}/events.out.tfevents.*")) == 3
    assert steps == sorted(set(steps)) and steps[-1] == TOTAL and any(s > stops[1] for s in steps)

    a, b = g_ema(newest(run_dir)), g_ema(newest(straight))
    assert all(torch.equal(a[k], b[k]) for k in a), "preempted run differs from the uninterrupted one"


def test_two_nodes_two_tasks_each_train_with_four_ranks(tmp_path):
    run_dir, job = submit(tmp_path, "run", *CPU, "--nodes", "2", "--tasks-per-node", "2")
    assert wait_for_job(job) == "COMPLETED", logs(run_dir, job)
    out = logs(run_dir, job)
    assert "4 rank(s) on node[1-2], rendezvous node1:" in out and "batch 8 = 4 rank(s) x 2" in out
    assert os.path.exists(run_dir / "checkpoints" / "ckpt-000000000128.pt")
    # Each node ran two of the ranks.
    assert len(glob.glob(f"{run_dir}/slurm/{job}_[0-3]_log.out")) == 4


def test_time_limit_signal_requeues_until_the_limit(limit_job):
    """A real time limit: Slurm sends SIGUSR2 --signal-delay seconds before it. With
    --max-requeues 0 the job checkpoints, refuses to requeue, and says why (the job: limit_job)."""
    run_dir, job = limit_job
    assert wait_for_job(job, timeout=300) == "FAILED"
    ev = events(run_dir)
    assert [e["event"] for e in ev] == ["start", "limit"] and ev[1]["signal"] == 12
    assert os.path.exists(ev[1]["checkpoint"])
    assert "requeued 0 time(s), the limit (--max-requeues 0): not requeueing again" in logs(run_dir, job)
    status = run_cli(["submit", "--status", str(run_dir)])
    assert f"job {job}: FAILED" in status.stdout and "limit" in status.stdout


def test_sbatch_template_trains_and_requeues_on_the_time_limit_signal(tmp_path):
    """launch/slurm/train.sbatch: srun + torchrun (c10d) over 2 nodes. SIGUSR2 to the batch script
    (what --signal=B:USR2@120 delivers) -> checkpoint, requeue, resume, finish."""
    run_dir = tmp_path / "run"
    cfg = tiny_config(run_dir, distributed={"strategy": "ddp"}, run={"dir": str(run_dir), "seed": 1, "num_threads": 1})
    cfg["train"]["total_kimg"] = TOTAL / 1000
    config = write_config(tmp_path / "run.yaml", cfg)
    out = tmp_path / "job.out"
    r = _slurm("sbatch", "--nodes=2", f"--output={out}", f"--export=ALL,PYTHON={sys.executable},NPROC_PER_NODE=1",
               str(REPO / "launch/slurm/train.sbatch"), config)
    job = re.search(r"Submitted batch job (\d+)", r.stdout).group(1)
    wait_for_checkpoint(run_dir, 64)
    _slurm("scancel", "--batch", "--signal=USR2", job)
    assert wait_for_job(job) == "COMPLETED", out.read_text()[-4000:]
    text = out.read_text()
    assert "rendezvous node1:" in text and "2 node(s) x 1 process(es)" in text
    stop = re.search(r"signal 15: checkpoint written to (\S+); exiting", text).group(1)
    assert "requeueing (requeue 1 of at most 10)" in text and "attempt 2:" in text
    assert f"resumed from {stop} at kimg" in text
    assert nimg(newest(run_dir)) == TOTAL


@pytest.mark.parametrize("args, message", [
    (["--partition", "nope"], "invalid partition specified: nope"),
    (["--nodes", "3"], "More processors requested than permitted"),
    (["--cpus-per-task", "64"], "More processors requested than permitted"),
    (["--mem", "9999G"], "Memory specification can not be satisfied"),
])
def test_bad_submission_reports_slurms_error(tmp_path, args, message):
    cfg = tiny_config(tmp_path / "run", distributed={"strategy": "ddp"})
    cfg["train"]["batch_size"] = 24  # divides over 4 and 6 ranks: only Slurm can object
    r = run_cli(["submit", write_config(tmp_path / "c.yaml", cfg), "--gpus-per-node", "0", "--tasks-per-node", "2",
                 *args])
    assert r.returncode == 5, r.stderr
    assert r.stderr.startswith("bigtrain: Slurm refused the job: sbatch: error:") and message in r.stderr
    assert "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "run" / "slurm" / "jobs.jsonl")
