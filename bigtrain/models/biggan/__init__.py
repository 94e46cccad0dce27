"""BigGAN: registration of the family (see README.md here)."""
from bigtrain.models.registry import FamilySpec, register

from .discriminator import BigGANDiscriminator
from .generator import BigGANGenerator
from .presets import PRESETS

SPEC = register(FamilySpec(
    name="biggan",
    generator=BigGANGenerator,
    discriminator=BigGANDiscriminator,
    # The paper's setup: hinge loss, two D steps per G step, G/D lr 1e-4 / 4e-4, Adam betas (0, 0.999)
    # and eps 1e-6, orthogonal regularization 1e-4 on G, no R1 or path length.
    defaults={
        "loss": {"type": "hinge", "r1_gamma": 0.0, "pl_weight": 0.0, "style_mixing_prob": 0.0, "ortho_weight": 1e-4},
        "train": {"g_lr": 1e-4, "d_lr": 4e-4, "betas": [0.0, 0.999], "eps": 1e-6, "num_d_steps": 2},
    },
    presets=PRESETS,
))

__all__ = ["SPEC", "BigGANDiscriminator", "BigGANGenerator"]
