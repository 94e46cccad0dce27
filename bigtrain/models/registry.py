"""Model families register one spec; configs choose a family by name (``model: stylegan2``)."""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

from torch import nn


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """What a model family exposes to the trainer.

    ``defaults`` holds the family's default values for other config sections (its default
    loss, say); ``presets`` maps a preset name to config values layered on top of them.
    """
    name: str
    generator: type  # has a nested ``Config`` dataclass; built as cls(cfg, img_resolution, img_channels, c_dim)
    discriminator: type
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    readme: str = ""

    def build_generator(self, cfg, img_resolution: int, img_channels: int, c_dim: int) -> nn.Module:
        return self.generator(cfg, img_resolution, img_channels, c_dim)

    def build_discriminator(self, cfg, img_resolution: int, img_channels: int, c_dim: int,
                            growing: bool = False) -> nn.Module:
        """growing: built for progressive growing (bigtrain/models/common/growing.py), where the
        family supports it; a family whose discriminator does not grow builds its plain one (and
        the schedule's check then names grow.start_res)."""
        if growing and "growing" in inspect.signature(self.discriminator).parameters:
            return self.discriminator(cfg, img_resolution, img_channels, c_dim, growing=True)
        return self.discriminator(cfg, img_resolution, img_channels, c_dim)


_FAMILIES: dict[str, FamilySpec] = {}
_LOADERS: dict[str, Callable[[], None]] = {}


def register(spec: FamilySpec) -> FamilySpec:
    _FAMILIES[spec.name] = spec
    return spec


def _load_builtin() -> None:
    # Importing a family's package registers it.
    from bigtrain.models import biggan, progan, stylegan2  # noqa: F401


def get_family(name: str) -> FamilySpec:
    _load_builtin()
    if name not in _FAMILIES:
        raise KeyError(name)
    return _FAMILIES[name]


def family_names() -> list[str]:
    _load_builtin()
    return sorted(_FAMILIES)
