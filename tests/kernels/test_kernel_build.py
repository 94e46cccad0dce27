"""The CUDA kernels compile and link, without a GPU, through bigtrain's own loader: two processes
start at once on an empty cache (as ranks on one node do), each asking for the three kernels in
a different order; every kernel is compiled exactly once, a process that finds another building
waits and then loads, and a stale lock left in a build folder by a killed build does not hang
anyone. Needs nvcc and the CUDA torch wheel (kernels/compile_check.sh installs it into
.venv-cuda); about 2 minutes on 2 cores."""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kernels, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "kernels" / "compile_check.sh"


@pytest.fixture(scope="module")
def cuda_python():
    if not shutil.which("nvcc"):
        if os.environ.get("CI"):
            pytest.fail("nvcc is not on PATH: the kernels cannot be compile-checked")
        pytest.skip("nvcc is not on PATH")
    # Installs the CUDA torch wheel into .venv-cuda on first use; compiles nothing (--only with no build).
    r = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return str(REPO / ".venv-cuda" / "bin" / "python")


def _env(cache: Path) -> dict:
    env = dict(os.environ, BIGTRAIN_KERNEL_CACHE=str(cache), TORCH_CUDA_ARCH_LIST="9.0", PYTHONPATH=str(REPO),
               MAX_JOBS="1")
    env.pop("CUDA_HOME", None)  # the loader finds the toolkit itself
    return env


def _key(cuda_python, env, name) -> str:
    return subprocess.run([cuda_python, "-c", f"from bigtrain.ops._build import build_key; print(build_key('{name}'))"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_kernels_compile_once_under_concurrent_builders(tmp_path, cuda_python):
    cache = tmp_path / "cache"
    env = _env(cache)
    cache.mkdir()
    # A build killed half-way leaves torch's lock file in its folder; ours must not wait on it.
    stale = cache / f"modconv-{_key(cuda_python, env, 'modconv')}"
    stale.mkdir()
    (stale / "lock").write_text("")
    # This test process plays a rank that is building upfirdn2d: it holds that kernel's lock.
    held = open(cache / f"upfirdn2d-{_key(cuda_python, env, 'upfirdn2d')}.lock", "w")
    fcntl.flock(held, fcntl.LOCK_EX)

    orders = (["bias_act", "upfirdn2d", "modconv"], ["modconv", "upfirdn2d", "bias_act"])
    logs = [tmp_path / f"builder{i}.log" for i in range(2)]
    procs = [subprocess.Popen([cuda_python, "-m", "bigtrain", "kernels", "--build-only", "--arch", "9.0", "--only",
                               *order], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)
             for order, log in zip(orders, logs)]
    deadline = time.time() + 1200
    while not all("waiting for another process to finish building 'upfirdn2d'" in log.read_text() for log in logs):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [log.read_text()[-3000:] for log in logs]
        time.sleep(1)
    held.close()  # the "other rank" is done (without a result): one builder compiles, the other waits and loads
    for p, log in zip(procs, logs):
        p.wait(timeout=1200)
        assert p.returncode == 0, log.read_text()[-5000:]
    both = "".join(log.read_text() for log in logs)
    for name in ("bias_act", "upfirdn2d", "modconv"):
        (folder,) = [f for f in cache.glob(f"{name}-*") if f.is_dir()]
        assert len((folder / "builds.log").read_text().splitlines()) == 1, f"{name} compiled more than once"
        assert both.count(f"{name}: compiled") == 1 and both.count(f"{name}: loaded from the cache") == 1, both

    # A second run finds everything in the cache.
    r = subprocess.run([cuda_python, "-m", "bigtrain", "kernels", "--build-only", "--arch", "9.0"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.count("loaded from the cache") == 3, r.stdout + r.stderr


def test_a_broken_kernel_fails_with_the_compiler_log(tmp_path, cuda_python):
    src = tmp_path / "src"
    shutil.copytree(REPO / "kernels", src)
    text = (src / "bias_act.cu").read_text()
    assert "const float z = d.f * gain;" in text
    text = text.replace("const float z = d.f * gain;", "const float z = d.f * gain")
    (src / "bias_act.cu").write_text(text)
    env = dict(_env(tmp_path / "cache"), BIGTRAIN_KERNEL_SOURCES=str(src))
    r = subprocess.run([cuda_python, "-m", "bigtrain", "kernels", "--build-only", "--arch", "9.0", "--only", "bias_act"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 6
    assert "bigtrain: building kernel 'bias_act'" in r.stderr and "error" in r.stderr and "bias_act.cu" in r.stderr
