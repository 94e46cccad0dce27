"""Shared test helpers: a tiny real-data StyleGAN2 config, a CLI runner, trained runs built once
per pytest run and shared by every file (and every xdist worker) that reads them, and the order
in which files start."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# One OpenMP thread in every process the tests start (run_cli, torchrun and the rest say so too):
# tiny models gain nothing from two, and two threads spin badly when the other core is busy.
os.environ.setdefault("OMP_NUM_THREADS", "1")


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


def run_cli(args: list[str], cwd=None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m bigtrain ARGS` in a real process, as a forked child of this worker's CLI server
    (tests/cli_server.py: torch imported once); env: variables to add to this one's."""
    # One thread: tiny models gain nothing from two, and two OpenMP threads spin badly when the
    # other core is busy (bf16 convs on CPU slowed 100x that way).
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    if not _forked():
        return subprocess.run([sys.executable, "-m", "bigtrain", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout)
    return _cli_server().run(list(args), env, str(cwd or os.getcwd()), timeout)


class _CliServer:
    """The client side of tests/cli_server.py, started on a worker's first CLI call."""

    def __init__(self):
        import tempfile
        self.folder = tempfile.mkdtemp(prefix="bigtrain-cli-")  # a short path: UNIX sockets allow ~100 bytes
        self.path = os.path.join(self.folder, "socket")
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, str(TESTS / "cli_server.py"), self.path], env=env,
                                     stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        assert ready == "ready\n", f"the tests' CLI server did not start (exit code {self.proc.poll()})"

    def run(self, args: list[str], env: dict, cwd: str, timeout: float,
            module: str = "bigtrain") -> subprocess.CompletedProcess:
        """`python -m MODULE ARGS`, forked by the server."""
        import selectors
        import signal
        import time

        from rank_client import send_call
        cmd = [sys.executable, "-m", module, *args]
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        conn, reply, pid = send_call(self.path, {"args": args, "env": env, "cwd": cwd, "module": module},
                                     [null, out_w, err_w])
        with conn:
            for fd in (null, out_w, err_w):
                os.close(fd)
            if pid is None:
                raise RuntimeError(f"the tests' CLI server did not answer (exit code {self.proc.poll()})")
            chunks = {out_r: [], err_r: []}
            deadline = time.monotonic() + timeout
            timed_out = False
            with selectors.DefaultSelector() as sel:
                for fd in chunks:
                    sel.register(fd, selectors.EVENT_READ)
                while sel.get_map() and not timed_out:
                    ready = sel.select(max(deadline - time.monotonic(), 0))
                    timed_out = not ready and time.monotonic() >= deadline
                    for key, _ in ready:
                        data = os.read(key.fd, 1 << 16)
                        if data:
                            chunks[key.fd].append(data)
                        else:
                            sel.unregister(key.fd)
            for fd in chunks:
                os.close(fd)
            out, err = (b"".join(chunks[fd]) for fd in (out_r, err_r))
            if timed_out:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(cmd, timeout, out, err)
            code = int(reply.readline())
        # As text=True reads them: universal newlines.
        out, err = (b.decode().replace("\r\n", "\n").replace("\r", "\n") for b in (out, err))
        return subprocess.CompletedProcess(cmd, code, out, err)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_server: _CliServer | None = None


def _cli_server() -> _CliServer:
    global _server
    if _server is None or _server.proc.poll() is not None:
        _server = _CliServer()
    return _server


@pytest.fixture(autouse=True, scope="session")
def _stop_cli_server():
    yield
    if _server is not None:
        _server.close()


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _forked(fork: bool = True) -> bool:
    """Whether a test's process is forked by the CLI server (not with BIGTRAIN_TEST_EXEC=1)."""
    return fork and os.environ.get("BIGTRAIN_TEST_EXEC") != "1"


TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def torchrun_cmd(nproc: int, args: list[str], nnodes: int = 1, node_rank: int = 0, port: int | None = None,
                 max_restarts: int = 0, fork: bool = True) -> list[str]:
    """A real torchrun of `python -m bigtrain ARGS` (standalone rendezvous unless a port is given).
    Its workers are forked by this worker's CLI server (tests/rank_client.py stands in for each
    before torchrun) unless fork=False or BIGTRAIN_TEST_EXEC=1: then each is a fresh interpreter."""
    rdzv = (["--standalone"] if port is None else
            ["--nnodes", str(nnodes), "--node_rank", str(node_rank), "--master_addr", "127.0.0.1",
             "--master_port", str(port)])
    worker = [str(TESTS / "rank_client.py"), _cli_server().path] if _forked(fork) else ["-m", "bigtrain"]
    return [*TORCHRUN, *rdzv, "--nproc_per_node", str(nproc), "--max_restarts", str(max_restarts), *worker, *args]


def run_torchrun(nproc: int, args: list[str], timeout: float = 600, fork: bool = True,
                 **kw) -> subprocess.CompletedProcess:
    """torchrun_cmd's command run to its end; the torchrun process itself is forked by the CLI
    server too (with its workers forked, only the small rank clients start interpreters)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = torchrun_cmd(nproc, args, fork=fork, **kw)
    if not _forked(fork):
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return _cli_server().run(cmd[len(TORCHRUN):], env, os.getcwd(), timeout, module="torch.distributed.run")


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


@pytest.fixture(autouse=True)
def _seeded():
    # Every test starts from the same random state, whatever ran before it in its worker: a test
    # that draws without seeding would otherwise get draws that depend on which files its xdist
    # worker took first (a CI run failed on one such draw). Fixtures of a wider scope are set up
    # before this one runs, so they are not covered by it.
    import random

    import numpy as np
    import torch
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


# ---------------------------------------------------------------------------- built once per run

def run_root(tmp_path_factory) -> Path:
    """The folder of this pytest run that every xdist worker sees (each worker's own basetemp lies
    inside it); without workers, the run's basetemp."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder made by build(folder) once per pytest run, by whichever worker asks first; the
    others wait on its lock and reuse it. A failed build leaves nothing behind, so the next asker
    builds again and fails with its own message. Readers that write (resume, eval's JSON) take a
    copy: copy_run()."""
    from filelock import FileLock
    root = run_root(tmp_path_factory) / "built-once"
    root.mkdir(exist_ok=True)
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                build(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            (folder / ".built").write_text("")
    return folder


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a built-once run folder, for a test that adds to it."""
    return Path(shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".built")))


def train_once(tmp_path_factory, name: str, cfg_of) -> Path:
    """The run dir of `bigtrain train` on cfg_of(run_dir), trained once per pytest run."""
    def build(folder):
        r = run_cli(["train", write_config(folder / f"{name}.yaml", cfg_of(folder / "run"))])
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        (folder / "train.out").write_text(r.stdout)
    return built_once(tmp_path_factory, name, build) / "run"


@pytest.fixture(scope="session")
def biggan_run(tmp_path_factory) -> Path:
    """The run dir of a tiny BigGAN (biggan_config) trained once per pytest run; read it only."""
    return train_once(tmp_path_factory, "biggan-tiny", biggan_config)


def kernel_emulation(tmp_path_factory) -> Path:
    """`bigtrain kernels --check --emulate` run once per pytest run on an empty kernel cache: the
    folder holds cache/ (the emulation build, which later users load instead of compiling again)
    and the run's check.out, check.err, check.rc and its --json rows, check.json."""
    def build(folder):
        env = dict(os.environ, BIGTRAIN_KERNEL_CACHE=str(folder / "cache"), PYTHONPATH=str(TESTS.parent))
        r = subprocess.run([sys.executable, "-m", "bigtrain", "kernels", "--check", "--emulate", "--json",
                            str(folder / "check.json")], env=env, capture_output=True, text=True, timeout=900)
        for name, text in (("out", r.stdout), ("err", r.stderr), ("rc", str(r.returncode))):
            (folder / f"check.{name}").write_text(text)
    return built_once(tmp_path_factory, "kernel-emulation", build)


# ---------------------------------------------------------------------------- file order

# The suite's longest files, longest first (their seconds: docs/benchmarks.md#test-suite). With
# workers (test.sh), a worker runs a whole file; starting the long files first keeps one of them
# from running alone at the end while the other workers sit idle. Other files follow in the usual
# order. A new file that takes over a minute belongs in this list.
LONGEST_FIRST = [
    "slurm/test_slurm_cluster.py",
    "kernels/test_kernel_build.py",
    "distributed/test_deepspeed.py",
    "distributed/test_ddp.py",
    "integration/test_cli_eval.py",
    "integration/test_export.py",
    "integration/test_train_metrics.py",
    "unit/ops/test_kernel_emulation.py",
    "distributed/test_biggan_ddp.py",
    "integration/test_cli_train.py",
    "distributed/test_grow_ddp.py",
]
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(item.path).resolve().relative_to(TESTS).as_posix(), len(rank)))
