"""What would make the host wait for a GPU, seen on the CPU (where nothing waits): a dispatch mode
that records reads of a tensor's value (``item``, ``float``, ``bool``) and tensors made from Python
data (``torch.tensor``, ``as_tensor``: on a GPU, a copy from pageable memory that waits for the stream
to drain), except inside the functions named ``allowed``: by default bigtrain's queued copy through
pinned memory. ``tolist`` does not dispatch on the CPU, so a read through it is not seen."""
from __future__ import annotations

import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class HostWaits(TorchDispatchMode):
    def __init__(self, allowed: tuple[str, ...] = ("_host_tensor",)):
        super().__init__()
        self.allowed = allowed
        self.reads: list[str] = []  # where a value was read
        self.made: list[str] = []  # where a tensor was made from Python data

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        seen = {torch.ops.aten._local_scalar_dense.default: self.reads, torch.ops.aten.lift_fresh.default: self.made}
        if func in seen:
            stack = traceback.extract_stack()
            if not any(f.name in self.allowed for f in stack):
                f = next((f for f in reversed(stack) if "/bigtrain/" in f.filename), stack[-3])
                seen[func].append(f"{f.filename.rsplit('/', 1)[-1]}:{f.name}:{f.lineno}")
        return func(*args, **(kwargs or {}))
