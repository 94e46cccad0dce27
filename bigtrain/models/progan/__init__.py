"""ProGAN: registration of the family (see README.md here)."""
from bigtrain.models.registry import FamilySpec, register

from .discriminator import ProGANDiscriminator
from .generator import ProGANGenerator
from .presets import PRESETS

SPEC = register(FamilySpec(
    name="progan",
    generator=ProGANGenerator,
    discriminator=ProGANDiscriminator,
    # The paper's training setup: WGAN-GP (lambda 10) with the epsilon-drift term, Adam lr 0.001,
    # betas (0, 0.99), progressive growing from 4x4 with 600k-image fade-in and stabilization.
    defaults={
        "loss": {"type": "wgan", "gp_weight": 10.0, "drift": 0.001, "r1_gamma": 0.0, "pl_weight": 0.0,
                 "style_mixing_prob": 0.0},
        "train": {"g_lr": 0.001, "d_lr": 0.001, "betas": [0.0, 0.99]},
        "grow": {"start_res": 4, "fade_kimg": 600, "stable_kimg": 600},
    },
    presets=PRESETS,
))

__all__ = ["SPEC", "ProGANDiscriminator", "ProGANGenerator"]
