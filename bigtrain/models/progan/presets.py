"""ProGAN presets by resolution: channels min(16384 / res, 512) as in the paper (512 up to
32x32, then halving to 16 at 1024; the family default), the paper's per-resolution batch
sizes (128 at 4-16, then halving: 64 at 32 ... 4 at 512 and 1024), 600 kimg fade-in and 600 kimg
stabilization per resolution, Adam lr 0.001 (0.0015 at 1024)."""

_BATCH = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4, 1024: 4}


def _preset(res: int) -> dict:
    batches = {str(r): b for r, b in _BATCH.items() if r <= res}
    grow = {"start_res": 4, "fade_kimg": 600, "stable_kimg": 600, "batch_size": batches}
    if res == 1024:
        grow["g_lr"] = grow["d_lr"] = {"1024": 0.0015}
    return {"data": {"resolution": res}, "train": {"batch_size": _BATCH[res]}, "grow": grow}


PRESETS = {f"res{r}": _preset(r) for r in (32, 64, 128, 256, 512, 1024)}
