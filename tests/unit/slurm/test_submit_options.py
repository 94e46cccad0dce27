"""`bigtrain submit` without a cluster: time limits, the rendezvous a Slurm task derives, the
sbatch script of a dry run, and what is refused before anything is queued."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bigtrain.distributed import DistEnv
from bigtrain.distributed.env import first_host, slurm_port
from bigtrain.slurm import Resources, parse_time
from conftest import run_cli, tiny_config, write_config


@pytest.mark.parametrize("text, minutes", [
    ("90", 90), ("1:30", 2), ("48:00:00", 2880), ("0:00:30", 1), ("2-00", 2880), ("1-12:30", 2190),
    ("1-00:00:01", 1441),
])
def test_parse_time_reads_slurms_formats(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "0", "1:2:3:4", "-5"])
def test_parse_time_rejects_the_rest(text):
    with pytest.raises(ValueError, match="--time"):
        parse_time(text)


@pytest.mark.parametrize("nodelist, host", [
    ("node1", "node1"), ("gpu[03-05,7],cpu1", "gpu03"), ("a-b[10,2]", "a-b10"), ("c1,c2", "c1")])
def test_first_host_of_a_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_slurm_tasks_agree_on_a_rendezvous_that_moves_on_requeue():
    base = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0",
            "SLURM_NTASKS_PER_NODE": "2(x2)", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242"}
    env = DistEnv.from_environ(base)
    assert (env.rank, env.local_rank, env.world_size, env.local_world_size, env.launcher) == (3, 1, 4, 2, "slurm")
    assert env.master_addr == "gpu07" and 20000 <= env.master_port < 30000
    assert DistEnv.from_environ({**base, "SLURM_PROCID": "0"}).master_port == env.master_port
    requeued = DistEnv.from_environ({**base, "SLURM_RESTART_COUNT": "1"})
    assert requeued.master_port != env.master_port
    assert slurm_port({"SLURM_JOB_ID": "5"}) != slurm_port({"SLURM_JOB_ID": "6"})
    # The environment wins when it names a rendezvous.
    own = DistEnv.from_environ({**base, "MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "29400"})
    assert (own.master_addr, own.master_port) == ("10.0.0.9", 29400)


def test_dry_run_prints_the_sbatch_script(tmp_path):
    cfg = tiny_config(tmp_path / "run", distributed={"strategy": "ddp"})
    r = run_cli(["submit", write_config(tmp_path / "c.yaml", cfg), "--nodes", "2", "--gpus-per-node", "4",
                 "--partition", "gpu", "--time", "2-00:00:00", "--account", "lab", "--qos", "high",
                 "--constraint", "h100", "--mem", "480G", "--cpus-per-task", "12", "--signal-delay", "300",
                 "--dry-run"])
    assert r.returncode == 0, r.stderr
    lines = set(r.stdout.splitlines())
    for flag in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=2880",
                 "--account=lab", "--qos=high", "--constraint=h100", "--mem=480G", "--cpus-per-task=12",
                 "--signal=USR2@300", "--requeue", "--job-name=bigtrain-run"):
        assert f"#SBATCH {flag}" in lines, flag
    assert any(ln.startswith("srun ") and "submitit.core._submit" in ln and str(tmp_path / "run" / "slurm") in ln
               for ln in lines)
    assert "8 rank(s)" in r.stdout
    assert not (tmp_path / "run").exists()  # nothing written, nothing queued


@pytest.mark.parametrize("cfg_train, args, message", [
    ({}, ["--nodes", "2", "--gpus-per-node", "2"], "distributed.strategy=single cannot run 4 processes"),
    ({"distributed": {"strategy": "ddp"}}, ["--gpus-per-node", "3"], "train.batch_size=8 must equal world_size=3"),
    ({"distributed": {"strategy": "ddp"}}, ["--gpus-per-node", "0"], "--gpus-per-node 0 (CPU nodes) needs --tasks-per-node"),
    ({"distributed": {"strategy": "ddp"}}, ["--gpus-per-node", "2", "--tasks-per-node", "4"], "one task per GPU"),
    ({"distributed": {"strategy": "ddp"}}, ["--time", "soon"], "--time 'soon'"),
    ({"distributed": {"strategy": "ddp"}}, ["--time", "2", "--signal-delay", "120"], "is not shorter than --time 2"),
])
def test_what_cannot_run_is_refused_before_queueing(tmp_path, cfg_train, args, message):
    cfg = tiny_config(tmp_path / "run", **cfg_train)
    path = write_config(tmp_path / "c.yaml", cfg)
    r = run_cli(["submit", path, *args, "--dry-run"])
    assert r.returncode == 2 and message in r.stderr, r.stderr
    if "single" in message:
        assert path in r.stderr  # names the file


def test_resources_default_to_one_task_per_gpu():
    assert Resources(nodes=2, gpus_per_node=8).tasks == 8
    assert Resources(gpus_per_node=0, tasks_per_node=3).tasks == 3


def test_status_of_a_run_dir_without_a_job_says_so(tmp_path):
    r = run_cli(["submit", "--status", str(tmp_path)])
    assert r.returncode == 2 and "no job was submitted" in r.stderr


def test_submit_without_a_slurm_client_says_so(tmp_path):
    cfg = tiny_config(tmp_path / "run", distributed={"strategy": "ddp"})
    path = write_config(tmp_path / "c.yaml", cfg)
    # PATH holds only the interpreter's folder: no sbatch, no srun.
    r = subprocess.run([sys.executable, "-m", "bigtrain", "submit", path, "--gpus-per-node", "2"], capture_output=True,
                       text=True, env=dict(os.environ, PATH=os.path.dirname(sys.executable)), timeout=300)
    assert r.returncode == 5 and "no Slurm client here" in r.stderr, r.stderr


def test_submit_refuses_a_run_dir_that_a_training_holds(tmp_path):
    """A training started by hand holds its run dir (bigtrain.checkpoint.lock): submit says so,
    exit 7, before it looks for Slurm or queues anything."""
    from bigtrain.checkpoint.lock import hold_run_dir
    cfg = tiny_config(tmp_path / "run", distributed={"strategy": "ddp"})
    with hold_run_dir(str(tmp_path / "run")):
        r = run_cli(["submit", write_config(tmp_path / "c.yaml", cfg), "--gpus-per-node", "0", "--tasks-per-node", "2"])
    assert r.returncode == 7, r.stderr
    assert f"run dir {tmp_path / 'run'} is in use by host" in r.stderr and f"pid {os.getpid()}" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run" / "slurm").exists()
