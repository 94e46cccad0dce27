"""Choice between the plain-PyTorch reference ops and the (future) CUDA kernels.

Every public op takes ``impl="auto" | "ref" | "cuda"`` and calls
:func:`resolve_impl` once. The CUDA kernels (``kernels/`` plus a loader in
``bigtrain/ops/_build.py``) do not exist yet, so this module is deliberately
tiny: the loader only has to replace :func:`_cuda_available`.
"""

from __future__ import annotations

import torch

IMPLS = ("auto", "ref", "cuda")


def _cuda_available(x: torch.Tensor, op: str) -> bool:
    # Placeholder for the kernel loader; no compiled kernels ship in this build.
    del x, op
    return False


def resolve_impl(impl: str, x: torch.Tensor, op: str) -> str:
    """Resolve the ``impl`` argument of an op to the implementation to run.

    Args:
        impl: ``"auto"`` (fastest available), ``"ref"`` (plain PyTorch) or
            ``"cuda"`` (custom kernels; error if they cannot be used).
        x: The op's main input; lets a kernel loader check device and dtype.
        op: Name of the calling op, used in error messages.

    Returns:
        ``"ref"`` or ``"cuda"``.
    """
    if impl not in IMPLS:
        raise ValueError(f"{op}: unknown impl={impl!r}; expected one of {', '.join(map(repr, IMPLS))}")
    if impl == "ref":
        return "ref"
    available = _cuda_available(x, op)
    if impl == "cuda" and not available:
        raise RuntimeError(
            f"{op}: impl='cuda' requested but bigtrain's CUDA kernels are not available in this build; "
            "use impl='auto' or 'ref'"
        )
    return "cuda" if available else "ref"
