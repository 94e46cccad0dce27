"""Build and load bigtrain's CUDA kernels (``kernels/*.cu``) on first use.

A kernel is compiled with torch.utils.cpp_extension (ninja) into a cache folder named by a hash
of its source, the torch and CUDA versions, the GPU architectures and the flags, so a changed
source or another GPU never loads a stale build. The build runs under an exclusive ``flock`` on
``<folder>.lock``: when several ranks on a node start at once, one builds and the others wait,
then load the result. An flock dies with its process, so a build killed half-way (Ctrl+C, OOM,
a preempted job) leaves no lock behind; the stale lock file torch's own builder may leave in
the folder is removed before building, which is where other GAN repos hang forever.

Ahead-of-time builds (``BIGTRAIN_BUILD_KERNELS=1 pip install -e .``) install the same sources
as ``bigtrain._kernel_<name>``; they are used when present.

The CPU emulation (``kernels/cpu_emulation.cpp``) builds the same kernel sources with the C++
compiler against any torch, CPU builds included; inside :func:`emulation`, ``impl="cuda"`` runs
them on CPU tensors. It exists to check the kernels' code without a GPU.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import os
import time
from pathlib import Path

import torch

KERNEL_DIR = Path(os.environ.get("BIGTRAIN_KERNEL_SOURCES", Path(__file__).resolve().parents[2] / "kernels"))
# Per kernel: the device side (the CUDA kernels and their launchers on raw pointers; nvcc sees no
# ATen header, kernels/launch.h) and the host side (tensor checks, dtype dispatch and the Python
# binding, compiled by the C++ compiler).
SOURCES = {name: [f"{name}.cu", f"{name}_host.cpp"] for name in ("upfirdn2d", "bias_act", "modconv")}
HEADERS = ["common.cuh", "host.h", "launch.h"]  # included by every kernel: part of each build key
EMULATION_SOURCES = ["cpu_emulation.cpp", "cpu_emulation.h", *HEADERS, *(f for fs in SOURCES.values() for f in fs)]
CUDA_FLAGS = ["-O3", "--expt-relaxed-constexpr"]
# The host side is glue (checks, allocation, a dtype switch, one launch per call): -O1 compiles it
# in 15.6 s against 26.9 s at -O3 (upfirdn2d_host.cpp, one job, session 18's 2-core machine), most
# of the difference spent optimising pybind11's and ATen's inline templates, which run once per call.
HOST_FLAGS = ["-O1"]
EMULATION_FLAGS = ["-O1"]

_loaded: dict[str, object] = {}
_failed: dict[str, "KernelBuildError"] = {}
_emulated: object | None = None  # the emulation module while emulation() is active
_emulation_modules: dict[str, object] = {}  # built or loaded in this process, by key


class KernelBuildError(RuntimeError):
    """A kernel could not be built or loaded; the message carries the compiler's log."""


def cache_root() -> Path:
    return Path(os.environ.get("BIGTRAIN_KERNEL_CACHE", Path.home() / ".cache" / "bigtrain" / "kernels"))


def arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST if set, else the visible GPUs' compute capabilities (e.g. "9.0")."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ";".join(f"{a}.{b}" for a, b in caps)
    raise KernelBuildError("no GPU visible and TORCH_CUDA_ARCH_LIST is not set: cannot tell which GPU to build for")


def _include_flags() -> list[str]:
    # CUDA 13 torch wheels ship the CUDA headers (cuda_runtime_api.h, ...) in nvidia/cu13/include.
    flags = []
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for sub in sorted(Path(root).glob("cu*/include")):
            flags += ["-isystem", str(sub)]
    return flags


def _cuda_home(detected: str | None) -> str | None:
    """torch's guess at the CUDA toolkit, unless CUDA_HOME is unset and the guess has no libcudart
    to link: an nvcc on PATH in /usr/local/bin makes torch guess /usr/local while the toolkit
    is in /usr/local/cuda."""
    if os.environ.get("CUDA_HOME") or detected is None:
        return detected
    if not list(Path(detected).glob("lib*/libcudart.so*")) and Path("/usr/local/cuda/bin/nvcc").exists():
        return "/usr/local/cuda"
    return detected


def _key(sources, parts) -> str:
    h = hashlib.sha256()
    for source in sources:
        h.update((KERNEL_DIR / source).read_bytes())
    for part in parts:
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def build_key(name: str) -> str:
    return _key([*SOURCES[name], *HEADERS],
                [torch.__version__, str(torch.version.cuda), arch_list(), " ".join(CUDA_FLAGS), " ".join(HOST_FLAGS)])


def emulation_key() -> str:
    return _key(EMULATION_SOURCES, [torch.__version__, " ".join(EMULATION_FLAGS)])


def _wait_note(name: str, lock_path: Path) -> None:
    from bigtrain.console import print0
    print0(f"kernels: waiting for another process to finish building '{name}' ({lock_path})")


def _locked_build(label: str, folder: Path, make):
    """``make()`` (a cpp_extension.load call into ``folder``) under the folder's flock."""
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder.with_suffix(".lock")
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _wait_note(label, lock_path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        # We hold the only lock; a 'lock' baton in the folder is a killed build's leftover.
        with contextlib.suppress(FileNotFoundError):
            (folder / "lock").unlink()
        cached = any(folder.glob("*.so"))
        t0 = time.time()
        try:
            module = make()
        except Exception as e:  # ninja / compiler / import errors: keep the whole log
            raise KernelBuildError(f"building kernel '{label}' in {folder} failed:\n{e}") from None
        if not cached:
            with open(folder / "builds.log", "a") as f:  # one line per compilation of this key
                f.write(f"pid {os.getpid()} compiled in {time.time() - t0:.1f} s\n")
    module.bigtrain_cached = cached
    return module


def build(name: str, verbose: bool = False):
    """Compile (or find in the cache) and import kernel ``name``; raises KernelBuildError."""
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        raise KernelBuildError(f"this torch ({torch.__version__}) is a CPU build: it cannot compile CUDA kernels")
    cpp_extension.CUDA_HOME = _cuda_home(cpp_extension.CUDA_HOME)
    if cpp_extension.CUDA_HOME is None:
        raise KernelBuildError("no CUDA toolkit found: set CUDA_HOME to the folder with bin/nvcc")
    key = build_key(name)
    folder = cache_root() / f"{name}-{key}"
    includes = _include_flags()

    def make():
        env_arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list()
        try:
            return cpp_extension.load(
                name=f"bigtrain_{name}_{key}", sources=[str(KERNEL_DIR / f) for f in SOURCES[name]],
                build_directory=str(folder),
                extra_cflags=[*HOST_FLAGS, *includes], extra_cuda_cflags=[*CUDA_FLAGS, *includes], verbose=verbose)
        finally:
            if env_arch is None:
                del os.environ["TORCH_CUDA_ARCH_LIST"]
            else:
                os.environ["TORCH_CUDA_ARCH_LIST"] = env_arch
    return _locked_build(name, folder, make)


def build_emulation(verbose: bool = False):
    """Compile (or find in the cache) the CPU emulation of all three kernels: one module with a
    submodule per kernel. Needs only a C++ compiler; raises KernelBuildError."""
    from torch.utils import cpp_extension

    key = emulation_key()
    if key not in _emulation_modules:
        folder = cache_root() / f"emulation-{key}"
        _emulation_modules[key] = _locked_build("emulation", folder, lambda: cpp_extension.load(
            name=f"bigtrain_emulation_{key}", sources=[str(KERNEL_DIR / "cpu_emulation.cpp")],
            build_directory=str(folder), extra_cflags=EMULATION_FLAGS, verbose=verbose))
    return _emulation_modules[key]


@contextlib.contextmanager
def emulation(verbose: bool = False):
    """Within this block ``impl="cuda"`` takes CPU tensors and runs the kernels' own source on the
    CPU through the emulation (slow; for checking the kernels' code without a GPU)."""
    global _emulated
    module = build_emulation(verbose)
    previous, _emulated = _emulated, module
    try:
        yield module
    finally:
        _emulated = previous


def emulating() -> bool:
    return _emulated is not None


def parity_marker(module) -> Path | None:
    """The file recording that ``module`` (a cached build) passed ``impl="auto"``'s parity check on
    this GPU model; None for ahead-of-time builds and the emulation, which are checked every time."""
    path = Path(getattr(module, "__file__", "") or "").resolve()
    if not torch.cuda.is_available() or path.parent.parent != cache_root().resolve():
        return None
    gpu = "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name())
    return path.parent / f"parity-ok-{gpu}-sm{''.join(map(str, torch.cuda.get_device_capability()))}"


def how_loaded(module) -> str:
    """How :func:`load` or :func:`build` came by ``module``, for messages and reports."""
    if not hasattr(module, "bigtrain_cached"):
        return "ahead-of-time build"
    return "loaded from the cache" if module.bigtrain_cached else "compiled"


def load(name: str, verbose: bool = False):
    """The kernel module for ``name``: ahead-of-time build, else cache, else a fresh build (its
    compiler commands shown with ``verbose``). A failure is remembered for the process and raised
    again on every call. Inside :func:`emulation`, the emulation's submodule."""
    if _emulated is not None:
        return getattr(_emulated, name)
    if name in _loaded:
        return _loaded[name]
    if name in _failed:
        raise _failed[name]
    try:
        try:
            module = importlib.import_module(f"bigtrain._kernel_{name}")
        except ImportError:
            module = build(name, verbose)
    except KernelBuildError as e:
        _failed[name] = e
        raise
    _loaded[name] = module
    return module
