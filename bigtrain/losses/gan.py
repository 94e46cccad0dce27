"""The GAN loss: adversarial term plus lazy regularizers, computed per phase.

``compute`` returns the total to differentiate and named terms for logging; it never calls
backward (the strategy does). Regularizer terms are multiplied by their phase's interval
(lazy regularization, Karras et al. 2020), and the optimizer built for a lazily
regularized net rescales lr and Adam betas by ``interval / (interval + 1)`` to match.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Literal

import torch
from torch import nn

from bigtrain.config import require
from bigtrain.distributed.strategy.base import SECOND_ORDER, WEIGHTS_OUTSIDE_FORWARD
from bigtrain.ops.conv import second_order

from .adversarial import d_loss, g_loss
from .augment import AUGMENTATIONS, AugmentConfig, diff_augment
from .regularizers import gradient_penalty, orthogonal_penalty, path_lengths, r1_penalty


@dataclasses.dataclass(frozen=True)
class Regularizer:
    """A regularizer as the trainer and the strategies see it."""
    key: str  # the config key that switches it on, e.g. "loss.r1_gamma"
    net: Literal["G", "D"]  # the net whose optimizer step it joins
    interval: int  # every this many steps of that net (lazy regularization); 1 = every step
    needs: tuple[str, ...]  # what it needs of a strategy (bigtrain.distributed.strategy.base.SECOND_ORDER, ...)
    lazy: bool = True  # a phase of its own at ``interval``; False: part of the net's main term


@dataclasses.dataclass
class LossOutput:
    total: torch.Tensor  # scalar to differentiate
    terms: dict[str, torch.Tensor]  # detached scalars for logging, e.g. "Loss/D/r1"


def per_sample_normal(seeds: list[int] | None, like: torch.Tensor, n: int) -> torch.Tensor | None:
    """Standard normal noise shaped like ``like[:n]``, row i drawn from seed ``seeds[i]``, so
    a sample gets the same draw whichever rank and batch it lands in; None without seeds."""
    if seeds is None:
        return None
    g = torch.Generator(device=like.device)
    return torch.stack([torch.randn(like.shape[1:], generator=g.manual_seed(int(s) + 1), device=like.device,
                                    dtype=like.dtype) for s in seeds[:n]])


class GANLoss(nn.Module):
    @dataclasses.dataclass
    class Config:
        type: Literal["logistic", "hinge", "wgan", "lsgan", "ragan"] = "logistic"  # Adversarial term: non-saturating logistic, hinge, Wasserstein, least squares, relativistic average.
        r1_gamma: float = 10.0  # R1 penalty weight (gamma / 2 * ||grad D(x)||^2 on reals); 0 = off.
        r1_interval: int = 16  # Apply R1 every this many D steps (lazy regularization); 1 = every step.
        gp_weight: float = 0.0  # WGAN-GP gradient-penalty weight on real/fake interpolates; 0 = off.
        gp_target: float = 1.0  # Target gradient norm of WGAN-GP.
        drift: float = 0.0  # Epsilon-drift weight on D(x)^2 that keeps WGAN logits near 0; 0 = off.
        pl_weight: float = 2.0  # Path-length regularization weight (StyleGAN2 generators); 0 = off.
        pl_interval: int = 4  # Apply path-length regularization every this many G steps.
        pl_decay: float = 0.01  # Decay of the running mean path length.
        pl_batch_shrink: int = 2  # Path-length batch = batch_gpu / this, to save compute.
        style_mixing_prob: float = 0.9  # Probability of mixing two latents at a random layer (StyleGAN2); 0 = off.
        ortho_weight: float = 0.0  # BigGAN's orthogonal regularization of G's weights (beta ||W W^T * (1 - I)||_F^2), every G step; 0 = off.
        augment: list[str] = dataclasses.field(default_factory=list)  # Older spelling of augment.kind: diffaugment with augment.policy (kept so earlier configs and checkpoints load); [] = off.

        def __post_init__(self):
            for k in ("r1_gamma", "gp_weight", "drift", "pl_weight", "ortho_weight"):
                require(getattr(self, k) >= 0, k, getattr(self, k), "must be >= 0")
            for k in ("r1_interval", "pl_interval", "pl_batch_shrink"):
                require(getattr(self, k) >= 1, k, getattr(self, k), "must be >= 1")
            require(0 <= self.pl_decay <= 1, "pl_decay", self.pl_decay, "must be in [0, 1]")
            require(0 <= self.style_mixing_prob <= 1, "style_mixing_prob", self.style_mixing_prob, "must be in [0, 1]")
            bad = [a for a in self.augment if a not in AUGMENTATIONS]
            require(not bad, "augment", self.augment, f"unknown augmentation(s) {bad}; choose from {list(AUGMENTATIONS)}")

    def __init__(self, cfg: "GANLoss.Config", augment: AugmentConfig | None = None):
        """``augment``: what D's inputs go through (the run's augment section); None: only the
        older ``loss.augment`` list."""
        super().__init__()
        self.cfg = cfg
        augment = augment or AugmentConfig()
        self.policy = list(augment.policy) if augment.kind == "diffaugment" else list(cfg.augment)
        # ADA's pipe (its p a buffer) and controller (its accumulators a buffer) are submodules, so
        # both are in this loss's state_dict and resume continues p exactly.
        self.augment_pipe, self.ada = augment.build()
        # Running mean of path lengths; a buffer so it is checkpointed with the loss.
        self.register_buffer("pl_mean", torch.zeros([]))
        # Averages a detached statistic over ranks (set by the trainer under a distributed
        # strategy) so the running path-length mean is the same on every rank.
        self.reduce_mean = lambda t: t

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's, except that augmentation may change at a resume: ADA's state missing from
        the checkpoint (switched on now) starts from the config, and state of a pipe no longer
        configured is dropped, and a fixed p (augment.kind fixed) is the config's, not the
        checkpoint's. Everything else must match."""
        own = self.state_dict()
        aug = ("augment_pipe.", "ada.")
        state = {k: v for k, v in state_dict.items() if k in own or not k.startswith(aug)}
        state.update({k: v for k, v in own.items() if k.startswith(aug) and k not in state})
        if self.augment_pipe is not None and self.ada is None:
            state["augment_pipe.p"] = own["augment_pipe.p"]
        return super().load_state_dict(state, strict, assign)

    def regularizers(self) -> list[Regularizer]:
        """The regularizers switched on, each with the net it acts on, its interval and what it
        needs of a strategy."""
        c = self.cfg
        out = []
        if c.r1_gamma > 0:
            out.append(Regularizer("loss.r1_gamma", "D", c.r1_interval, (SECOND_ORDER,)))
        if c.pl_weight > 0:
            out.append(Regularizer("loss.pl_weight", "G", c.pl_interval, (SECOND_ORDER,)))
        if c.gp_weight > 0:
            # WGAN-GP on interpolates is applied every step in its paper; keep it un-lazy.
            out.append(Regularizer("loss.gp_weight", "D", 1, (SECOND_ORDER,)))
        if c.ortho_weight > 0:  # part of every G step's main term, not a phase of its own
            out.append(Regularizer("loss.ortho_weight", "G", 1, (WEIGHTS_OUTSIDE_FORWARD,), lazy=False))
        return out

    def reg_intervals(self) -> dict[str, int | None]:
        """Per net: the lazy-regularization interval (the shortest of its regularizers'), or None
        when that net has no lazy regularizer."""
        lazy = [r for r in self.regularizers() if r.lazy]
        return {net: min((r.interval for r in lazy if r.net == net), default=None) for net in ("G", "D")}

    def needs(self) -> dict[str, list[str]]:
        """What the regularizers need of a strategy -> the config keys that bring it."""
        out: dict[str, list[str]] = {}
        for r in self.regularizers():
            for need in r.needs:
                out.setdefault(need, []).append(r.key)
        return out

    def compute(self, phase: Any, nets: Any, batch: dict[str, torch.Tensor], progress: Any = None) -> LossOutput:
        """``phase`` has .net ('G'|'D'), .terms ('main'|'reg'|'both') and .interval;
        ``nets`` has callables .G and .D (and .G_raw, the generator module itself, not its
        distributed wrapper, for orthogonal regularization); ``batch`` has real_img (float, [-1, 1]), real_c,
        gen_z and gen_c."""
        c = self.cfg
        D = self._augmented(nets.D)
        terms: dict[str, torch.Tensor] = {}
        total = torch.zeros([], device=batch["gen_z"].device)
        do_main = phase.terms in ("main", "both")
        do_reg = phase.terms in ("reg", "both")
        gain = phase.interval if phase.terms == "reg" else 1

        if phase.net == "G":
            if do_main:
                fake = nets.G(batch["gen_z"], batch["gen_c"], update_emas=True, **self._g_kwargs())
                fake_logits = D(fake, batch["gen_c"])
                real_logits = D(batch["real_img"], batch["real_c"]) if c.type == "ragan" else None
                loss = g_loss(c.type, fake_logits, real_logits).mean()
                terms["Loss/scores/fake"] = fake_logits.detach().mean()
                terms["Loss/G/main"] = loss.detach()
                total = total + loss
                if c.ortho_weight > 0:
                    ortho = orthogonal_penalty(nets.G_raw.ortho_parameters())
                    terms["Loss/G/ortho"] = ortho.detach()
                    total = total + c.ortho_weight * ortho
            if do_reg and c.pl_weight > 0:
                n = max(1, batch["gen_z"].shape[0] // c.pl_batch_shrink)
                with second_order():  # path length differentiates this pass twice
                    img, ws = nets.G(batch["gen_z"][:n], batch["gen_c"][:n], return_ws=True, **self._g_kwargs())
                lengths = path_lengths(img, ws, per_sample_normal(batch.get("sample_seeds"), img, n))
                pl_mean = self.pl_mean.lerp(self.reduce_mean(lengths.detach().mean()), c.pl_decay)
                self.pl_mean.copy_(pl_mean)
                penalty = (lengths - pl_mean).square().mean()
                terms["Loss/G/pl"] = penalty.detach()
                terms["Loss/G/pl_mean"] = pl_mean.detach()
                # img.sum() * 0 keeps every synthesis output in the graph (no unused params under DDP).
                total = total + (penalty * c.pl_weight + img.sum() * 0) * gain
            return LossOutput(total, terms)

        # D phases: G is only a sampler here, so skip building its graph.
        if do_main:
            with torch.no_grad():
                fake = nets.G(batch["gen_z"], batch["gen_c"], update_emas=False, **self._g_kwargs())
            real_img = batch["real_img"].detach().requires_grad_(do_reg and c.r1_gamma > 0)
            fake_logits = D(fake, batch["gen_c"])
            # R1 differentiates the real pass twice: fast convolution gradients of every order.
            with second_order() if real_img.requires_grad else contextlib.nullcontext():
                real_logits = D(real_img, batch["real_c"])
            if self.ada is not None:
                self.ada.accumulate(real_logits)  # the overfitting heuristic's signs, on the device
            loss = d_loss(c.type, real_logits, fake_logits).mean()
            terms["Loss/scores/real"] = real_logits.detach().mean()
            terms["Loss/scores/fake"] = fake_logits.detach().mean()
            terms["Loss/D/main"] = loss.detach()
            total = total + loss
            if c.drift > 0:
                drift = real_logits.square().mean()
                terms["Loss/D/drift"] = drift.detach()
                total = total + c.drift * drift
            if do_reg and c.gp_weight > 0:
                with second_order():
                    gp = gradient_penalty(D, batch["real_img"], fake, batch["real_c"], c.gp_target).mean()
                terms["Loss/D/gp"] = gp.detach()
                total = total + c.gp_weight * gp
            if do_reg and c.r1_gamma > 0:
                r1 = r1_penalty(real_img, real_logits).mean()
                terms["Loss/D/r1"] = r1.detach()
                total = total + r1 * (c.r1_gamma / 2)
        elif do_reg and c.r1_gamma > 0:
            real_img = batch["real_img"].detach().requires_grad_(True)
            with second_order():
                real_logits = D(real_img, batch["real_c"])
            r1 = r1_penalty(real_img, real_logits).mean()
            terms["Loss/D/r1"] = r1.detach()
            # real_logits * 0 keeps the epilogue in the graph (no unused params under DDP).
            total = total + (r1 * (c.r1_gamma / 2) + real_logits.sum() * 0) * gain
        return LossOutput(total, terms)

    def _augmented(self, D):
        """D with the configured augmentation applied to its input (identity when off)."""
        if self.augment_pipe is not None:
            return lambda img, c: D(self.augment_pipe(img), c)
        if self.policy:
            return lambda img, c: D(diff_augment(img, self.policy), c)
        return D

    def _g_kwargs(self) -> dict:
        return {"style_mixing_prob": self.cfg.style_mixing_prob} if self.cfg.style_mixing_prob > 0 else {}
