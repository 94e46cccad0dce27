"""Shared test helpers: a tiny real-data StyleGAN2 config and a CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def tiny_config(run_dir: str, **sections) -> dict:
    """A StyleGAN2 small enough to train a few steps in seconds, on 256 real Fashion-MNIST
    images at 16x16, with every lazy regularizer active at interval 2."""
    cfg = {
        "model": "stylegan2",
        "run": {"dir": str(run_dir), "seed": 1},
        "data": {"source": FASHION_MNIST, "resolution": 16, "fit": "resize", "max_images": 256},
        "generator": {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 128, "channel_max": 16},
        "discriminator": {"channel_base": 128, "channel_max": 16},
        "loss": {"r1_gamma": 1.0, "r1_interval": 2, "pl_weight": 2.0, "pl_interval": 2, "style_mixing_prob": 0.5,
                 "augment": ["translation", "cutout"]},
        "train": {"total_kimg": 0.064, "batch_size": 8, "ema_halflife_kimg": 0.01},
        "log": {"tick_kimg": 0.016, "grid_size": 4, "progress_bar": False},
        "checkpoint": {"interval_ticks": 1, "keep": 2},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def biggan_config(run_dir, **train) -> dict:
    """A tiny class-conditional BigGAN on 16x16 Fashion-MNIST; 2 D steps per G step. Nothing is
    drawn per rank (no augmentation), so ranks are exact."""
    cfg = tiny_config(run_dir, model="biggan",
                      loss={"type": "hinge", "r1_gamma": 0.0, "pl_weight": 0.0, "style_mixing_prob": 0.0,
                            "augment": [], "ortho_weight": 1e-4},
                      train={"total_kimg": 0.032, "batch_size": 8, "num_d_steps": 2, "g_lr": 1e-4, "d_lr": 4e-4,
                             "betas": [0.0, 0.999], "eps": 1e-6, "ema_halflife_kimg": 0.01, **train},
                      log={"tick_kimg": 0.016, "image_ticks": 0, "grid_size": 4, "progress_bar": False},
                      checkpoint={"interval_ticks": 1, "keep": 2})
    cfg["data"]["use_labels"] = True
    cfg["generator"] = {"z_dim": 15, "ch": 4, "ch_mult": [4, 4, 2], "attn_res": [8], "shared_dim": 8}
    cfg["discriminator"] = {"ch": 4, "ch_mult": [2, 4, 4], "attn_res": [8]}
    return cfg


def write_config(path, cfg: dict) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return str(path)


def run_cli(args: list[str], cwd=None, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    # One thread: tiny models gain nothing from two, and two OpenMP threads spin badly when the
    # other core is busy (bf16 convs on CPU slowed 100x that way).
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "bigtrain", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_cmd(nproc: int, args: list[str], nnodes: int = 1, node_rank: int = 0, port: int | None = None,
                 max_restarts: int = 0) -> list[str]:
    """A real torchrun of `python -m bigtrain ARGS` (standalone rendezvous unless a port is given)."""
    rdzv = (["--standalone"] if port is None else
            ["--nnodes", str(nnodes), "--node_rank", str(node_rank), "--master_addr", "127.0.0.1",
             "--master_port", str(port)])
    return [sys.executable, "-m", "torch.distributed.run", *rdzv, "--nproc_per_node", str(nproc),
            "--max_restarts", str(max_restarts), "-m", "bigtrain", *args]


def run_torchrun(nproc: int, args: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run(torchrun_cmd(nproc, args, **kw), env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tiny(tmp_path):
    """(config dict, path of its YAML) for a tiny run in tmp_path/run."""
    cfg = tiny_config(tmp_path / "run")
    return cfg, write_config(tmp_path / "tiny.yaml", cfg)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tests use tiny tensors: one thread is faster than two that wait on each other,
    # and it keeps timings sane when the machine is shared.
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
