"""Host tensors onto the training device without the host waiting for it."""
from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``. A CPU tensor goes to a GPU through pinned memory, a copy queued like a
    kernel: torch's copy from pageable memory waits for the stream to drain (a host sync)."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
