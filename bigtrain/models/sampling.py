"""Seeds -> images: latents and labels from seeds (the same seed gives the same z on every machine
and device), each family's truncation through ``G.sample``, batch-norm standing statistics,
and style mixing and latent walks for generators with a mapping network."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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


def check_class(G: torch.nn.Module, class_idx: int | None) -> None:
    if class_idx is not None and not G.c_dim:
        raise ValueError(f"--class {class_idx} given, but this generator is unconditional")
    if class_idx is not None and not 0 <= class_idx < G.c_dim:
        raise ValueError(f"--class {class_idx} is out of range: the generator has classes 0..{G.c_dim - 1}")


def class_labels(c_dim: int, start: int, n: int, class_idx: int | None) -> torch.Tensor | None:
    """Labels of the seeds listed at positions start..start+n-1: ``class_idx`` for all, or else
    position i gets class i mod c_dim (a column per class in a grid); None when unconditional."""
    if not c_dim:
        return None
    if class_idx is not None:
        return torch.full((n,), class_idx, dtype=torch.long)
    return torch.arange(start, start + n) % c_dim


@torch.no_grad()
def generate_images(G: torch.nn.Module, seeds: list[int], trunc: float | None = None, class_idx: int | None = None,
                    batch: int = 32, device: str | torch.device = "cpu", noise_mode: str = "const") -> torch.Tensor:
    """Images [len(seeds), C, H, W] in [-1, 1]; one seed -> the same image on every run.
    ``trunc``: the family's truncation trick (``G.sample``), None = off."""
    c_dim = G.c_dim
    G.check_truncation(trunc)
    check_class(G, class_idx)
    out = []
    for i in range(0, len(seeds), batch):
        chunk = seeds[i:i + batch]
        z = latents_from_seeds(chunk, G.z_dim, device)
        c = one_hot(class_labels(c_dim, i, len(chunk), class_idx), c_dim, len(chunk), device)
        img = G.sample(z, c, trunc, noise_mode)
        out.append(F.interpolate(img, size=G.img_resolution, mode="nearest").cpu())
    return torch.cat(out)


@torch.no_grad()
def standing_stats(G: torch.nn.Module, batches: int, batch: int = 32, device: str | torch.device = "cpu",
                   seed: int = 2 ** 31) -> bool:
    """BigGAN's "standing statistics": reset every batch-norm layer's running statistics and
    re-estimate them as a plain average over ``batches`` batches of G's own samples (latents from
    fixed seeds, classes uniform), then return to eval mode. False (and nothing done) when G has
    no batch norm."""
    if not G.uses_batch_norm:
        return False
    bns = [m for m in G.modules() if hasattr(m, "reset_running_stats") and hasattr(m, "momentum")]
    if not bns:
        return False
    saved = [m.momentum for m in bns]
    G.eval()  # only the BN layers train: spectral norm and the rest stay as they are
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    try:
        for i in range(batches):
            seeds = list(range(seed + i * batch, seed + (i + 1) * batch))
            z = latents_from_seeds(seeds, G.z_dim, device)
            labels = torch.tensor(seeds) % G.c_dim if G.c_dim else None
            G(z, one_hot(labels, G.c_dim, batch, device))
    finally:
        G.eval()
        for m, mom in zip(bns, saved):
            m.momentum = mom
    return True


# ---------------------------------------------------------------- generators with a mapping network (w)
def _require_w(G: torch.nn.Module, what: str) -> None:
    if not G.has_w:
        raise ValueError(f"{what} needs a StyleGAN2 generator (it mixes and interpolates w), not {type(G).__name__}")


def _ws(G, seeds: list[int], trunc: float | None, class_idx: int | None, device) -> torch.Tensor:
    check_class(G, class_idx)
    z = latents_from_seeds(seeds, G.z_dim, device)
    # Labels as generate_images gives them, so each seed's image here is the one
    # `bigtrain generate --seeds` (same list) makes.
    c = one_hot(class_labels(G.c_dim, 0, len(seeds), class_idx), G.c_dim, len(seeds), device)
    return G.mapping(z, c, truncation_psi=1.0 if trunc is None else trunc)


def _synthesize(G, ws: torch.Tensor, batch: int) -> torch.Tensor:
    out = [G.synthesis(w, noise_mode="const", fused_modconv=True, out_res=G.stage_res, alpha=G.alpha)
           for w in ws.split(batch)]
    return F.interpolate(torch.cat(out), size=G.img_resolution, mode="nearest").cpu()


def parse_layers(text: str, G: torch.nn.Module) -> list[int]:
    """'0-3' or '0,1,6' -> w layer indices of ``G`` (a generator with a mapping network), each checked
    against its num_ws."""
    _require_w(G, "--style-mix")
    num_ws = G.num_ws
    layers = parse_seeds(text)
    bad = [i for i in layers if not 0 <= i < num_ws]
    if bad:
        raise ValueError(f"--mix-layers {text}: layer {bad[0]} does not exist; this generator has w layers 0-{num_ws - 1}")
    return layers


@torch.no_grad()
def style_mix_grid(G, row_seeds: list[int], col_seeds: list[int], layers: list[int], trunc: float | None = None,
                   class_idx: int | None = None, batch: int = 32, device="cpu") -> torch.Tensor:
    """Images for a (rows + 1) x (cols + 1) grid: the top row the column seeds' images, the left
    column the row seeds', and cell (r, c) the column seed's w with ``layers`` taken from the row
    seed (coarse layers 0-3: pose and shape from the row, colour and texture from the column).
    The top-left corner is blank."""
    _require_w(G, "--style-mix")
    rows, cols = _ws(G, row_seeds, trunc, class_idx, device), _ws(G, col_seeds, trunc, class_idx, device)
    mixed = cols[None].repeat(len(row_seeds), 1, 1, 1)  # [R, C, num_ws, w_dim]
    mixed[:, :, layers] = rows[:, None, layers]
    col_img, row_img = _synthesize(G, cols, batch), _synthesize(G, rows, batch)
    cells = _synthesize(G, mixed.flatten(0, 1), batch).view(len(row_seeds), len(col_seeds), *col_img.shape[1:])
    blank = torch.full_like(col_img[:1], -1.0)
    grid = [torch.cat([blank, col_img])]
    grid += [torch.cat([row_img[r:r + 1], cells[r]]) for r in range(len(row_seeds))]
    return torch.cat(grid)


@torch.no_grad()
def interpolation_frames(G, seeds: list[int], steps: int, trunc: float | None = None, class_idx: int | None = None,
                         batch: int = 32, device="cpu") -> torch.Tensor:
    """Frames walking in w from each seed to the next, ``steps`` per leg (the last seed closes
    the walk): [(len(seeds) - 1) * steps + 1, C, H, W]."""
    _require_w(G, "--interp")
    if len(seeds) < 2 or steps < 1:
        raise ValueError("--interp needs at least two seeds and steps >= 1")
    ws = _ws(G, seeds, trunc, class_idx, device)
    t = torch.arange(steps, device=ws.device, dtype=ws.dtype).view(-1, 1, 1) / steps
    legs = [torch.lerp(ws[i][None], ws[i + 1][None], t) for i in range(len(seeds) - 1)]
    return _synthesize(G, torch.cat(legs + [ws[-1:]]), batch)
