"""Generation from a training checkpoint: rebuild G_ema from the stored config, no pickle."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from bigtrain.checkpoint import load_state
from bigtrain.checkpoint.state import resolve_resume
from bigtrain.config import build
from bigtrain.models import get_family
from bigtrain.models.common.growing import set_stage
from bigtrain.models.sampling import latents_from_seeds, one_hot
from bigtrain.train.schedule import checkpoint_stage
from bigtrain.train.observe import image_grid, save_png


def load_generator_from_checkpoint(path: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """-> (G_ema in eval mode, info): the checkpoint's model_info plus "checkpoint" (the file) and
    "config" (its TrainConfig). ``path`` may be a checkpoint file or a run dir."""
    if os.path.isdir(path):
        path = resolve_resume(path, path)
    state = load_state(path)
    from bigtrain.train.config import TrainConfig
    cfg = build(TrainConfig, state["config"], sources=f"the config stored in {path}")
    info = dict(state["model_info"], checkpoint=path, config=cfg)
    G = get_family(info["family"]).build_generator(cfg.generator, info["resolution"], info["channels"], info["c_dim"])
    G.load_state_dict(state["nets"]["G_ema"])
    # A checkpoint taken while growing makes images at its stage (upsampled to full size here).
    stage = checkpoint_stage(state, cfg, info["resolution"])
    set_stage(G, stage.resolution, stage.alpha)
    return G.eval().requires_grad_(False).to(device), info


@torch.no_grad()
def generate_images(G: torch.nn.Module, seeds: list[int], trunc: float | None = None, class_idx: int | None = None,
                    batch: int = 32, device: str | torch.device = "cpu", noise_mode: str = "const") -> torch.Tensor:
    """Images [len(seeds), C, H, W] in [-1, 1]; one seed -> the same image on every run.
    ``trunc``: the family's truncation trick (G.truncation_arg names its keyword), None = off."""
    c_dim = G.c_dim
    kwargs = {}
    if trunc is not None:
        if G.truncation_arg is None:
            raise ValueError(f"{type(G).__name__} has no truncation trick; leave --trunc out")
        kwargs[G.truncation_arg] = trunc
    if class_idx is not None and not c_dim:
        raise ValueError(f"--class {class_idx} given, but this generator is unconditional")
    if class_idx is not None and not 0 <= class_idx < c_dim:
        raise ValueError(f"--class {class_idx} is out of range: the generator has classes 0..{c_dim - 1}")
    out = []
    for i in range(0, len(seeds), batch):
        chunk = seeds[i:i + batch]
        z = latents_from_seeds(chunk, G.z_dim, device)
        if not c_dim:
            labels = None
        elif class_idx is None:  # cycle through the classes: seed i gets class i mod c_dim
            labels = torch.arange(i, i + len(chunk)) % c_dim
        else:
            labels = torch.full((len(chunk),), class_idx, dtype=torch.long)
        c = one_hot(labels, c_dim, len(chunk), device)
        img = G(z, c, noise_mode=noise_mode, **kwargs)
        out.append(F.interpolate(img, size=G.img_resolution, mode="nearest").cpu())
    return torch.cat(out)


@torch.no_grad()
def standing_stats(G: torch.nn.Module, batches: int, batch: int = 32, device: str | torch.device = "cpu",
                   seed: int = 2 ** 31) -> bool:
    """BigGAN's "standing statistics": reset every batch-norm layer's running statistics and
    re-estimate them as a plain average over ``batches`` batches of G's own samples (latents from
    fixed seeds, classes uniform), then return to eval mode. False (and nothing done) when G has
    no batch norm."""
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


def write_outputs(img: torch.Tensor, names: list[str], out: str | None, outdir: str | None,
                  grid_w: int | None = None) -> list[str]:
    """The grid (``out``) and/or one PNG per image named ``names[i]``.png in ``outdir``."""
    written = []
    if out:
        save_png(image_grid(img, grid_w), out)
        written.append(out)
    if outdir:
        os.makedirs(outdir, exist_ok=True)
        for name, im in zip(names, img):
            p = os.path.join(outdir, f"{name}.png")
            save_png(image_grid(im[None], 1), p)
            written.append(p)
    return written
