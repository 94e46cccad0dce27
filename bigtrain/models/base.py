"""The contract between a model family and everything outside ``bigtrain/models/``.

A family's generator subclasses :class:`Generator` and its discriminator :class:`Discriminator`, and
says what it can do through the class attributes and methods below. Callers (the trainer, generate,
export, eval) read these and never a family's name or an attribute they probe for; a family that
leaves a capability at its default simply does not have it.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class Generator(nn.Module):
    """What every generator is to callers: ``z_dim``, ``c_dim``, ``img_resolution`` (set by the
    family's ``__init__``), ``forward(z, c, noise_mode=...)`` -> images in about [-1, 1], and:"""

    #: The keyword of ``forward`` that ``--trunc`` sets (StyleGAN2's psi, BigGAN's threshold);
    #: None: the family has no truncation trick.
    truncation_arg: ClassVar[str | None] = None
    #: The ``trunc`` value that means "no truncation" in an exported graph's input.
    truncation_off: ClassVar[float | None] = None
    #: A truncation at which export checks its graphs against the generator.
    truncation_check: ClassVar[float | None] = None
    #: A mapping network into w: style mixing, latent walks, path-length regularization
    #: (``mapping``, ``synthesis``, ``num_ws``, ``forward(..., return_ws=, style_mixing_prob=)``).
    has_w: ClassVar[bool] = False
    #: Progressive growing (``bigtrain.models.common.growing.Growable`` sets it).
    growable: ClassVar[bool] = False

    #: Batch-norm layers whose statistics can be re-estimated from G's own samples ("standing
    #: statistics", bigtrain.models.sampling.standing_stats).
    uses_batch_norm: ClassVar[bool] = False

    def sample(self, z: torch.Tensor, c: torch.Tensor | None, trunc: float | None = None,
               noise_mode: str = "const") -> torch.Tensor:
        """Images from z and c with the family's truncation trick at ``trunc`` (what ``--trunc``
        means for it; None: off). A family without one refuses a ``trunc``."""
        self.check_truncation(trunc)
        return self(z, c, noise_mode=noise_mode, **({} if trunc is None else {self.truncation_arg: trunc}))

    def check_truncation(self, trunc: float | None) -> None:
        """A ``trunc`` given to a family without a truncation trick is an error."""
        if trunc is not None and self.truncation_arg is None:
            raise ValueError(f"{type(self).__name__} has no truncation trick; leave --trunc out")

    def traceable(self, z: torch.Tensor, c: torch.Tensor | None, trunc: torch.Tensor | None) -> torch.Tensor:
        """Images from z, c and a tensor ``trunc`` (the graph input; None when the family has no
        truncation) in arithmetic a tracer follows: what ONNX and TorchScript exports run."""
        return self(z, c, noise_mode="const")

    def truncation_centre(self) -> torch.Tensor | None:
        """The point truncation pulls towards, recorded in exports (StyleGAN2's w_avg); None: none."""
        return None

    def ortho_parameters(self) -> list[nn.Parameter] | None:
        """Weights under BigGAN's orthogonal regularization; None: the family does not define it."""
        return None


class Discriminator(nn.Module):
    """What every discriminator is to callers: ``forward(img, c)`` -> logits, and:"""

    #: Progressive growing (``Growable`` sets it; StyleGAN2's D per instance).
    growable: bool = False

    def resolution_blocks(self) -> list[tuple[int, nn.Module]] | None:
        """(resolution, block) from the highest resolution down, without the output layers: what
        ``train.freeze_d`` freezes. None: the family has no such blocks."""
        return None
