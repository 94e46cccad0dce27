"""DDP on CPU with gloo, in real torchrun processes: 2 ranks x 4 equals 1 rank x 8, a
2-node job on loopback, a killed rank restarted by torchrun, resume at another world size."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import free_port, run_cli, run_torchrun, tiny_config, torchrun_cmd, train_once, write_config

pytestmark = pytest.mark.slow  # real torchrun processes: not in the fast tier

TOL = 2e-5  # max abs difference of any weight after 4 steps (float32 summation order differs)


def _equiv_config(run_dir, **train):
    """Every random draw that matters is seeded per sample (z, path-length noise) and nothing
    is drawn per rank (no augmentation, style mixing or noise inputs), so ranks are exact."""
    return tiny_config(run_dir, generator={"use_noise": False},
                       discriminator={"mbstd_group_size": 4},
                       loss={"style_mixing_prob": 0.0, "augment": []},
                       train={"total_kimg": 0.032, "batch_size": 8, **train},
                       log={"tick_kimg": 0.016, "image_ticks": 0}, checkpoint={"interval_ticks": 1, "keep": 2})


def _final_state(run_dir, back: int = 1):
    ckpts = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    return torch.load(os.path.join(run_dir, "checkpoints", ckpts[-back]), weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    """Over weights; w_avg (the truncation centre, a running mean each rank keeps from its own
    samples, rank 0's checkpointed) is not part of the training math and is left out."""
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a
               if a[k].is_floating_point() and not k.endswith("w_avg"))


def equiv_one_rank(tmp_path_factory) -> Path:
    """The run dir of 1 rank x 8 on _equiv_config, trained once per pytest run (the DDP and
    DeepSpeed comparisons read it)."""
    return train_once(tmp_path_factory, "equiv-one-rank", _equiv_config)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_two_ranks_of_4_equal_one_rank_of_8(tmp_path, tmp_path_factory, channels_last):
    """channels_last: DDP's gradient buckets with NHWC weights reduce what the NCHW run does."""
    one = equiv_one_rank(tmp_path_factory)
    two = _equiv_config(tmp_path / "two", batch_gpu=4)
    two["distributed"] = {"strategy": "ddp"}
    two["train"]["channels_last"] = channels_last
    r = run_torchrun(2, ["train", write_config(tmp_path / "two.yaml", two)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rank(s)" not in r.stdout and "2 rank(s) x 4 x 1 round(s)" in r.stdout
    s1, s2 = _final_state(one), _final_state(tmp_path / "two")
    assert s1["progress"]["nimg"] == s2["progress"]["nimg"] == 32
    for net in ("G", "D"):
        d = _max_diff(s1["strategy"][net]["module"], s2["strategy"][net]["module"])
        assert d < TOL, f"{net} differs by {d}"
    assert _max_diff(s1["nets"]["G_ema"], s2["nets"]["G_ema"]) < TOL
    # The tolerance is meaningful: one step moves the weights far more than it.
    earlier = _final_state(one, back=2)
    assert earlier["progress"]["nimg"] == 16
    for net in ("G", "D"):
        assert _max_diff(s1["strategy"][net]["module"], earlier["strategy"][net]["module"]) > 50 * TOL


def test_accumulation_rounds_equal_one_big_batch(tmp_path):
    """1 rank x 2 rounds of 4 == 1 rank x 8, with lazy R1. Minibatch-stddev is off (its groups
    follow the chunking) and so is path length (its sub-batch and running mean are per round)."""
    cfgs = {}
    for name, extra in (("big", {}), ("acc", {"batch_gpu": 4})):
        c = _equiv_config(tmp_path / name, **extra)
        c["discriminator"]["mbstd_num_channels"] = 0
        c["loss"]["pl_weight"] = 0.0
        r = run_cli(["train", write_config(tmp_path / f"{name}.yaml", c)])
        assert r.returncode == 0, r.stderr
        cfgs[name] = _final_state(tmp_path / name)
    assert cfgs["acc"]["progress"]["nimg"] == 32
    for net in ("G", "D"):
        assert _max_diff(cfgs["big"]["strategy"][net]["module"], cfgs["acc"]["strategy"][net]["module"]) < TOL


def test_two_node_job_on_loopback_trains_checkpoints_and_resumes_at_world_size_one(tmp_path):
    """launch/torchrun.sh run twice, as two nodes would; then the run resumed by one process."""
    cfg = tiny_config(tmp_path / "run", distributed={"strategy": "ddp"}, train={"batch_gpu": 4})
    path = write_config(tmp_path / "c.yaml", cfg)
    port = free_port()
    script = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "torchrun.sh")
    procs = [subprocess.Popen(["bash", script, path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", NNODES="2",
                                       NODE_RANK=str(n), NPROC_PER_NODE="1", MASTER_PORT=str(port),
                                       MAX_RESTARTS="0", PYTHON=sys.executable))
             for n in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert "2 rank(s) x 4 x 1 round(s)" in outs[0]
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "ckpt-000000000064.pt")

    r = run_cli(["train", path, "train.total_kimg=0.096", "distributed.strategy=single", "train.batch_gpu=null"])
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "1 rank(s) x 8 x 1 round(s)" in r.stdout
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "ckpt-000000000096.pt")


def _children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def test_killed_rank_is_restarted_and_training_resumes(tmp_path):
    cfg = tiny_config(tmp_path / "run", distributed={"strategy": "ddp"},
                      train={"batch_gpu": 4, "total_kimg": 0.2}, checkpoint={"interval_ticks": 1, "keep": 2})
    path = write_config(tmp_path / "c.yaml", cfg)
    # As launch/torchrun.sh does: restarts need the workers' store apart from the agent's.
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    # Real worker interpreters (fork=False): the signals here go to the rank processes themselves.
    proc = subprocess.Popen(torchrun_cmd(2, ["train", path], max_restarts=1, fork=False), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckdir = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not (ckdir.exists() and any(n.endswith(".pt") for n in os.listdir(ckdir))):
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGKILL)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "resumed from" in out  # the restarted workers picked up the newest checkpoint
    assert os.path.exists(ckdir / "ckpt-000000000200.pt")
    assert torch.load(ckdir / "ckpt-000000000200.pt", weights_only=True)["progress"]["nimg"] == 200


def test_sigterm_to_one_rank_checkpoints_all_ranks_at_the_same_step(tmp_path):
    cfg = tiny_config(tmp_path / "run", distributed={"strategy": "ddp"},
                      train={"batch_gpu": 4, "total_kimg": 2.0}, checkpoint={"interval_ticks": 1000, "keep": 2})
    path = write_config(tmp_path / "c.yaml", cfg)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(torchrun_cmd(2, ["train", path], fork=False), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(tmp_path / "run" / "stats.jsonl"):
        time.sleep(0.2)
    os.kill(_children(proc.pid)[1], signal.SIGTERM)  # rank 1 only
    out = proc.communicate(timeout=120)[0]
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"))
    assert len(ckpts) == 1, out
    assert "checkpoint written to" in out
    r = run_cli(["train", path, "train.total_kimg=0.2", "distributed.strategy=single", "train.batch_gpu=null"])
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stderr


def test_two_rank_resume_is_exact_with_per_rank_randomness(tmp_path):
    """Augmentation (ADA's pipe, p adjusted every 3 steps), style mixing and noise inputs draw from
    each rank's own generator; every rank's generator state is checkpointed, and ADA's sign sums of
    both ranks since its last adjustment (the stop falls mid-interval), so 2 ranks stopped and resumed
    equal 2 ranks straight."""
    def cfg(name, total):
        return write_config(tmp_path / f"{name}.yaml", tiny_config(
            tmp_path / name, distributed={"strategy": "ddp"}, train={"total_kimg": total, "batch_gpu": 4},
            loss={"augment": []}, augment={"kind": "ada", "p": 0.5, "interval": 3, "speed_kimg": 0.1}))
    r = run_torchrun(2, ["train", cfg("straight", 0.064)])
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_torchrun(2, ["train", cfg("resumed", 0.032)])
    assert r.returncode == 0, r.stderr[-3000:]
    mid = torch.load(tmp_path / "resumed/checkpoints/ckpt-000000000032.pt", weights_only=True)
    assert len(mid["rng"]) == 2
    assert mid["loss"]["ada.acc"][1].item() == 8  # step 4's real logits of both ranks (4 each), unadjusted yet
    r = run_torchrun(2, ["train", str(tmp_path / "resumed.yaml"), "train.total_kimg=0.064"])
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stderr[-3000:]
    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "resumed")
    assert a["progress"]["nimg"] == b["progress"]["nimg"] == 64
    for net in ("G", "D"):
        sa, sb = a["strategy"][net]["module"], b["strategy"][net]["module"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa), net
    assert all(torch.equal(a["loss"][k], b["loss"][k]) for k in a["loss"])  # p, the sign sums
    rt = [[json.loads(line).get("Progress/augment_rt") for line in open(tmp_path / run / "stats.jsonl")][-1]
          for run in ("straight", "resumed")]
    assert rt[0] == rt[1] and rt[0] is not None
