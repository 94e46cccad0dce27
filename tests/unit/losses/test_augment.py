"""Differentiable augmentation: what each transform does, gradients, config validation."""
from __future__ import annotations

import pytest
import torch

from bigtrain.config import ConfigError, load_config
from bigtrain.losses.augment import diff_augment
from bigtrain.train.config import TrainConfig


def _ramp(n=4, size=8):
    return torch.arange(n * size * size, dtype=torch.float64).view(n, 1, size, size) + 1


def test_translation_shifts_whole_images_with_zero_fill():
    x = _ramp()
    torch.manual_seed(3)
    y = diff_augment(x, ["translation"], translation_ratio=0.25)
    for a, b in zip(x[:, 0], y[:, 0]):
        # Find the shift that maps a onto b; the uncovered border is zero.
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                s = torch.roll(a, (dy, dx), (0, 1))
                keep = b != 0
                if torch.equal(s[keep], b[keep]) and (b == 0).sum() == (abs(dy) * 8 + abs(dx) * 8 - abs(dy * dx)):
                    found = True
        assert found


def test_cutout_zeroes_one_square_per_sample():
    x = _ramp(8)
    torch.manual_seed(0)
    y = diff_augment(x, ["cutout"], cutout_ratio=0.5)
    zeroed = (y == 0).sum(dim=[1, 2, 3])
    assert ((zeroed >= 1) & (zeroed <= 16)).all()
    assert torch.equal(y[y != 0], x[y != 0])


def test_gradients_flow_through_every_augmentation():
    x = _ramp().requires_grad_(True)
    torch.manual_seed(1)
    y = diff_augment(x, ["translation", "cutout", "brightness", "contrast"])
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_augmentation_is_a_config_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss:\n  augment: [translation, rotate]\n")
    with pytest.raises(ConfigError, match=r"loss.augment.*rotate"):
        load_config(str(p), [], TrainConfig)
