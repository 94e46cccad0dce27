"""What a run shows: TensorBoard events, stats.jsonl, console tick lines, a progress bar
and sample grids. Rank 0 only; other ranks get a silent Observer."""
from __future__ import annotations

import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch

from bigtrain.distributed import print0


def image_grid(img_NCHW: torch.Tensor, grid_w: int | None = None) -> np.ndarray:
    """Float images in [-1, 1] -> uint8 grid [H*rows, W*cols, C] (C is 1 or 3)."""
    img = ((img_NCHW.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    N, C, H, W = img.shape
    grid_w = grid_w or max(1, math.ceil(math.sqrt(N)))
    grid_h = math.ceil(N / grid_w)
    canvas = torch.zeros(grid_h * grid_w, C, H, W, dtype=torch.uint8)
    canvas[:N] = img
    canvas = canvas.reshape(grid_h, grid_w, C, H, W).permute(0, 3, 1, 4, 2).reshape(grid_h * H, grid_w * W, C)
    return canvas.numpy()


def save_png(grid_HWC: np.ndarray, path: str) -> None:
    from PIL import Image
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arr = grid_HWC[:, :, 0] if grid_HWC.shape[2] == 1 else grid_HWC
    Image.fromarray(arr, "L" if arr.ndim == 2 else "RGB").save(path)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux -> GiB


class TickStats:
    """Per-tick accumulation of detached scalars; averaged when the tick is reported."""

    def __init__(self):
        self.values: dict[str, list[torch.Tensor]] = {}

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():
            self.values.setdefault(k, []).append(v.detach().float())

    def means(self) -> dict[str, float]:
        # One .item() per key per tick, not per step: each is a device sync.
        out = {k: torch.stack(v).mean().item() for k, v in self.values.items() if v}
        self.values.clear()
        return out


class Observer:
    def __init__(self, run_dir: str, enabled: bool, total_nimg: int, start_nimg: int, progress_bar: bool):
        self.run_dir, self.enabled = run_dir, enabled
        self.writer = None
        self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        # purge_step: on resume, TensorBoard hides what an earlier attempt logged after the
        # checkpoint's step (a crash after it), so the curves continue without overlap.
        self.writer = SummaryWriter(log_dir=run_dir, purge_step=start_nimg + 1 if start_nimg else None)
        self.stats_file = open(os.path.join(run_dir, "stats.jsonl"), "a")
        if progress_bar and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total_nimg, initial=start_nimg, unit="img", unit_scale=True, dynamic_ncols=True)

    def advance(self, nimg: int) -> None:
        if self.bar is not None:
            self.bar.update(nimg - self.bar.n)

    def scalars(self, values: dict[str, float], kimg: float, nimg: int) -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            self.writer.add_scalar(k, v, global_step=nimg)
        self.writer.flush()
        self.stats_file.write(json.dumps({"kimg": round(kimg, 3), "timestamp": time.time(), **values}) + "\n")
        self.stats_file.flush()

    def image(self, tag: str, grid_HWC: np.ndarray, nimg: int, png_path: str | None = None) -> None:
        if not self.enabled:
            return
        self.writer.add_image(tag, grid_HWC, global_step=nimg, dataformats="HWC")
        self.writer.flush()
        if png_path:
            save_png(grid_HWC, png_path)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print0(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
            self.stats_file.close()
