"""The traceable BigGAN truncation that the ONNX/TorchScript graphs use, against the model's own
float64 version, over thresholds and latents far into the tails (where float32 erf loses them)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bigtrain.models.biggan.generator import ndtr_lower, ndtri_lower, truncate_z_traceable
from bigtrain.models.biggan.generator import truncate_z


@pytest.mark.parametrize("threshold", [0.1, 0.5, 1.0, 2.0, 4.0, 6.0])
def test_truncation_matches_the_model_everywhere(threshold):
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(50000, generator=g), torch.tensor([0.0, 1e-8, -1e-8, 3.0, -3.0, 5.0, -5.5, 7.0])])
    got = truncate_z_traceable(z, torch.tensor(threshold))
    want = truncate_z(z.double(), threshold).float()
    assert torch.isfinite(got).all()
    assert (got - want).abs().max() < 2e-6
    assert got.abs().max() <= threshold


def test_far_tails_stay_finite_and_inside_the_threshold():
    z = torch.tensor([-40.0, -12.0, 12.0, 40.0])
    got = truncate_z_traceable(z, torch.tensor(20.0))
    assert torch.isfinite(got).all() and (got.abs() <= 20).all() and (got.sign() == z.sign()).all()


def test_lower_tail_cdf_and_quantile_are_relative_accurate():
    from scipy.special import ndtr, ndtri  # exact in the far tail (torch's float64 ndtr is 0 below -8.3)
    x = -np.linspace(0, 12, 300)
    rel = np.abs(ndtr_lower(torch.from_numpy(x).float()).double().numpy() / ndtr(x) - 1).max()
    assert rel < 3e-5  # float32: a^2 ~ 72 at x = -12 carries ~1e-5 relative into exp()
    p = np.logspace(-30, np.log10(0.5), 300)
    assert np.abs(ndtri_lower(torch.from_numpy(p).float()).double().numpy() - ndtri(p)).max() < 1e-5
