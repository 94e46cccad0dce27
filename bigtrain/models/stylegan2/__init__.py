"""StyleGAN2: registration of the family."""
from bigtrain.models.registry import FamilySpec, register

from .discriminator import StyleGAN2Discriminator
from .generator import StyleGAN2Generator
from .presets import PRESETS

SPEC = register(FamilySpec(
    name="stylegan2",
    generator=StyleGAN2Generator,
    discriminator=StyleGAN2Discriminator,
    defaults={"loss": {"type": "logistic", "r1_interval": 16, "pl_interval": 4}},
    presets=PRESETS,
))

__all__ = ["SPEC", "StyleGAN2Discriminator", "StyleGAN2Generator"]
