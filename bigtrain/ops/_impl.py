"""Choice between the plain-PyTorch reference ops and the CUDA kernels.

Every public op takes ``impl="auto" | "ref" | "cuda"`` and calls :func:`resolve_impl` once:

* ``ref``: the plain-PyTorch reference (any device).
* ``cuda``: the kernel; an error when the input is not on a GPU or the kernel does not build
  (the error carries the compiler log). Inside ``bigtrain.ops._build.emulation()``, it takes
  CPU inputs only and runs the kernels' source through the CPU emulation; ``auto`` is the reference there.
* ``auto``: the kernel for CUDA inputs once it has built and passed a quick parity check
  against the reference (in this process, or earlier for the same cached build on the same GPU
  model: a ``parity-ok-<gpu>`` file in the build's cache folder records it); otherwise the
  reference, with one warning on rank 0 saying why. CPU inputs always take the reference, silently.

``BIGTRAIN_KERNELS=off`` makes ``auto`` use the reference everywhere.
"""

from __future__ import annotations

import os
from typing import Callable

import torch

IMPLS = ("auto", "ref", "cuda")
KERNEL_OF = {"upfirdn2d": "upfirdn2d", "bias_act": "bias_act", "modulated_conv2d": "modconv"}

_auto_ok: dict[str, bool] = {}
# The check a kernel passes before impl="auto" trusts it: kernel_check.quick_parity, set by
# bigtrain/ops/__init__.py (it runs the ops themselves, which import this module).
_parity_check: Callable[[str], str | None] = lambda kernel: f"no parity check is set for '{kernel}'"


def set_parity_check(fn: Callable[[str], str | None]) -> None:
    """``fn(kernel)`` -> None when the kernel agrees with the reference, else what differs."""
    global _parity_check
    _parity_check = fn


def _auto_kernel_ok(kernel: str) -> bool:
    """Build, then check on small random inputs, once per process; warn once if not usable."""
    if kernel not in _auto_ok:
        from bigtrain.console import print0
        from bigtrain.ops._build import KernelBuildError, load, parity_marker

        try:
            marker = parity_marker(load(kernel))
            if marker is not None and marker.exists():
                problem = None  # this build passed on this GPU model before: the check is not repeated
            else:
                # The first call may come under no_grad or autocast; the check needs neither.
                with torch.enable_grad(), torch.autocast("cuda", enabled=False):
                    problem = _parity_check(kernel)
                if problem is None and marker is not None:
                    try:
                        marker.write_text(f"quick_parity passed on {torch.cuda.get_device_name()}\n")
                    except OSError:  # a read-only cache: the kernel passed all the same; checked again next time
                        pass
        except KernelBuildError as e:
            problem = f"it did not build ({str(e).splitlines()[0]}; impl='cuda' shows the full log)"
        except Exception as e:  # a kernel that crashes is not used either
            problem = f"its parity check raised {type(e).__name__}: {e}"
        _auto_ok[kernel] = problem is None
        if problem:
            print0(f"warning: CUDA kernel '{kernel}' is not used, the PyTorch reference runs instead: {problem}")
    return _auto_ok[kernel]


def auto_decisions() -> dict[str, bool]:
    """What ``impl="auto"`` decided in this process: kernel name -> whether it runs the kernel
    (a kernel absent has not met a CUDA input yet). For reports, e.g. `bigtrain bench gpu`."""
    return dict(_auto_ok)


def check_impl(impl: str, op: str) -> None:
    """An ``impl`` argument that is none of IMPLS is an error naming ``op``."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: unknown impl={impl!r}; expected one of {', '.join(map(repr, IMPLS))}")


def resolve_impl(impl: str, x: torch.Tensor, op: str) -> str:
    """Resolve the ``impl`` argument of an op to the implementation to run.

    Args:
        impl: ``"auto"`` (fastest available), ``"ref"`` (plain PyTorch) or
            ``"cuda"`` (custom kernels; error if they cannot be used).
        x: The op's main input; its device decides.
        op: Name of the calling op, used in error messages.

    Returns:
        ``"ref"`` or ``"cuda"``.
    """
    check_impl(impl, op)
    if impl == "ref":
        return "ref"
    from bigtrain.ops._build import emulating, load
    if emulating():
        # The kernels loaded now are the CPU emulation: CPU tensors that ask for them get them.
        if impl == "cuda" and x.device.type != "cpu":
            raise RuntimeError(f"{op}: inside emulation(), impl='cuda' runs the CPU emulation of the kernels and "
                               f"takes CPU tensors, got one on {x.device}")
        return "cuda" if impl == "cuda" else "ref"
    if impl == "cuda":
        if not x.is_cuda:
            raise RuntimeError(f"{op}: impl='cuda' needs CUDA tensors, got one on {x.device}; use impl='auto' or 'ref'")
        load(KERNEL_OF[op])  # raises KernelBuildError with the compiler log
        return "cuda"
    if not x.is_cuda or os.environ.get("BIGTRAIN_KERNELS") == "off":
        return "ref"
    return "cuda" if _auto_kernel_ok(KERNEL_OF[op]) else "ref"
