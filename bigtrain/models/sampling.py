"""Latents and labels from seeds: the same seed gives the same z on every machine and device."""
from __future__ import annotations

import numpy as np
import torch


def latents_from_seeds(seeds: list[int], z_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """z [len(seeds), z_dim]: each row from numpy's RandomState(seed), which is platform-stable."""
    z = np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds]).astype(np.float32)
    return torch.from_numpy(z).to(device)


def one_hot(labels: torch.Tensor | None, c_dim: int, n: int, device) -> torch.Tensor:
    """Class indices -> one-hot [n, c_dim]; an empty [n, 0] tensor for unconditional models."""
    if c_dim == 0 or labels is None:
        return torch.zeros(n, c_dim, device=device)
    return torch.nn.functional.one_hot(labels.to(device), c_dim).float()


def parse_seeds(text: str) -> list[int]:
    """'0-63' -> 0..63; '1,5,9-11' -> [1, 5, 9, 10, 11]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(v) for v in part.split("-", 1))
            if hi < lo:
                raise ValueError(f"seed range {part!r} is empty (end before start)")
            seeds.extend(range(lo, hi + 1))
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"no seeds in {text!r}; use e.g. 0-63 or 1,5,9")
    return seeds
