"""Tests for bigtrain.ops.bias_act."""

import math

import pytest
import torch
import torch.nn.functional as F

from bigtrain.ops import ACTIVATIONS, bias_act

# Independent expectations: torch.nn.functional counterpart and default gain.
EXPECTED = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, math.sqrt(2)),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
    "tanh": (torch.tanh, 1.0),
    "sigmoid": (torch.sigmoid, 1.0),
    "elu": (F.elu, 1.0),
    "selu": (F.selu, 1.0),
    "softplus": (F.softplus, 1.0),
    "swish": (F.silu, math.sqrt(2)),
}


def _rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _away_from(x, points, margin=0.05):
    """Nudge values so none lies within `margin` of a kink."""
    for p in points:
        near = (x - p).abs() < margin
        x = torch.where(near, p + margin * 2 * torch.sign(x - p + 1e-12), x)
    return x


def test_table_is_complete_and_defaults_match():
    assert set(ACTIVATIONS) == set(EXPECTED)
    for name, (_, gain) in EXPECTED.items():
        assert ACTIVATIONS[name].def_gain == pytest.approx(gain)
        assert ACTIVATIONS[name].name == name
    assert ACTIVATIONS["lrelu"].def_alpha == pytest.approx(0.2)


@pytest.mark.parametrize("act", sorted(EXPECTED))
def test_matches_functional_times_gain(act):
    fn, gain = EXPECTED[act]
    x = _rand(2, 5, 3, 4, seed=1)
    b = _rand(5, seed=2)
    y = bias_act(x, b, act=act)
    torch.testing.assert_close(y, fn(x + b[None, :, None, None]) * gain)
    # Explicit gain overrides the default; no bias is fine.
    torch.testing.assert_close(bias_act(x, act=act, gain=0.5), fn(x) * 0.5)


def test_lrelu_alpha():
    x = _rand(3, 4, seed=3)
    torch.testing.assert_close(bias_act(x, act="lrelu", alpha=0.1, gain=1), F.leaky_relu(x, 0.1))
    with pytest.raises(ValueError, match="alpha"):
        bias_act(x, act="relu", alpha=0.1)


def test_clamp():
    x = _rand(4, 6, seed=4) * 5
    b = _rand(6, seed=5)
    y = bias_act(x, b, act="lrelu", clamp=1.5)
    ref = (F.leaky_relu(x + b, 0.2) * math.sqrt(2)).clamp(-1.5, 1.5)
    torch.testing.assert_close(y, ref)
    assert y.abs().max() <= 1.5 and (y.abs() == 1.5).any()
    # Clamp applies after the gain; None or negative disables it.
    torch.testing.assert_close(bias_act(x, act="linear", gain=10, clamp=2.0), (x * 10).clamp(-2, 2))
    torch.testing.assert_close(bias_act(x, clamp=-1), x)
    torch.testing.assert_close(bias_act(x, clamp=None), x)


def test_dim():
    x = _rand(3, 5, seed=6)
    b0, b1 = _rand(3, seed=7), _rand(5, seed=8)
    torch.testing.assert_close(bias_act(x, b0, dim=0, act="tanh"), torch.tanh(x + b0[:, None]))
    torch.testing.assert_close(bias_act(x, b1, dim=1, act="tanh"), torch.tanh(x + b1[None, :]))
    torch.testing.assert_close(bias_act(x.t(), b0, dim=1), bias_act(x, b0, dim=0).t())
    torch.testing.assert_close(bias_act(x, b1, dim=-1), x + b1)


def test_bias_dtype_follows_x():
    x = _rand(2, 3, dtype=torch.float32)
    assert bias_act(x, torch.ones(3, dtype=torch.float64)).dtype == torch.float32


def test_errors():
    x = _rand(2, 3)
    with pytest.raises(ValueError, match="'gelu'") as e:
        bias_act(x, act="gelu")
    assert "lrelu" in str(e.value) and "swish" in str(e.value)
    with pytest.raises(ValueError, match=r"x.shape\[1\]=3"):
        bias_act(x, torch.ones(4))
    with pytest.raises(ValueError, match=r"a 2-D b must be \[N, C\] for a 4-D x"):
        bias_act(x, torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"got b of shape \(1, 3\), x of shape \(2, 3, 4, 4\)"):
        bias_act(_rand(2, 3, 4, 4), torch.ones(1, 3))  # one sample's bias for two samples
    with pytest.raises(ValueError, match="1-D"):
        bias_act(x, torch.ones(1, 1, 3))
    with pytest.raises(ValueError, match="dim=2"):
        bias_act(x, torch.ones(3), dim=2)
    with pytest.raises(ValueError, match="bogus"):
        bias_act(x, impl="bogus")
    with pytest.raises(RuntimeError, match="bias_act: impl='cuda'"):
        bias_act(x, impl="cuda")


def test_a_per_sample_bias_with_a_scale_is_an_affine_map_per_sample_and_channel():
    # bias_act(x, b [N, C], scale=s) is act(x * s + b) per sample and channel (BigGAN's conditional
    # BN + ReLU calls it so); the reference computes x * s + b in float32 as one multiply-add and, for
    # 16-bit x, rounds it once.
    x = _rand(3, 4, 5, 6, dtype=torch.float32)
    b, s = _rand(3, 4, seed=1, dtype=torch.float32), _rand(3, 4, seed=2, dtype=torch.float32)
    u = torch.addcmul(b[:, :, None, None], x, s[:, :, None, None])
    torch.testing.assert_close(u, x * s[:, :, None, None] + b[:, :, None, None])
    assert torch.equal(bias_act(x, b, scale=s, act="relu", gain=1), torch.relu(u))
    assert torch.equal(bias_act(x, b, act="relu", gain=1), torch.relu(x + b[:, :, None, None]))
    half = x.to(torch.bfloat16)
    y = bias_act(half, b, scale=s, act="relu", gain=1)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, torch.relu(torch.addcmul(b[:, :, None, None], half, s[:, :, None, None]).bfloat16()))


def test_scale_and_addend_are_the_modulated_convolutions_epilogue():
    # bias_act(x, b, scale=s, addend=a) is bias_act(x * s + a, b), bit for bit on the reference
    # (a training run on the CPU gives the same numbers whichever way a layer calls it).
    x, b = _rand(3, 4, 5, 6, dtype=torch.float32), _rand(4, seed=1, dtype=torch.float32)
    s, a = _rand(3, 4, seed=2, dtype=torch.float32), _rand(3, 1, 5, 6, seed=3, dtype=torch.float32)
    kw = dict(act="lrelu", clamp=0.8)
    want = bias_act(x * s[:, :, None, None] + a, b, **kw)
    assert torch.equal(bias_act(x, b, scale=s, addend=a, **kw), want)
    # An addend shared by the samples, as [1, 1, H, W] or [H, W] (StyleGAN2's constant noise).
    for shared in (a[:1], a[0, 0]):
        assert torch.equal(bias_act(x, b, scale=s, addend=shared, **kw), bias_act(x * s[:, :, None, None] + shared, b, **kw))
    assert torch.equal(bias_act(x, b, addend=a, **kw), bias_act(x + a, b, **kw))
    # The scale and addend follow x's dtype, as the bias does.
    assert bias_act(x, b, scale=s.double(), addend=a.double()).dtype == torch.float32


def test_scale_and_addend_errors():
    x = _rand(3, 4, 5, 6)
    with pytest.raises(ValueError, match=r"scale must be \[N, C\] = \[3, 4\], got \(4,\)"):
        bias_act(x, scale=torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"addend must be \[3 or 1, 1, 5, 6\] or \[5, 6\], got \(3, 4, 5, 6\)"):
        bias_act(x, addend=x)
    with pytest.raises(ValueError, match=r"need a 4-D x \[N, C, H, W\] with dim=1, got x of shape \(3, 4\)"):
        bias_act(_rand(3, 4), scale=torch.ones(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="dim=2"):
        bias_act(x, torch.ones(5, dtype=torch.float64), dim=2, addend=torch.zeros(5, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="dim=4 is out of range"):
        bias_act(x, dim=4, scale=torch.ones(3, 4, dtype=torch.float64))
    # dim=-3 is dim 1 of a 4-D x, with or without a bias.
    s = torch.rand(3, 4, dtype=torch.float64)
    assert torch.equal(bias_act(x, dim=-3, scale=s), bias_act(x * s[:, :, None, None]))


@pytest.mark.parametrize(
    "act,alpha,clamp",
    [(a, None, None) for a in sorted(EXPECTED)] + [("lrelu", 0.3, None), ("lrelu", None, 0.7), ("tanh", None, 0.4)],
)
def test_gradcheck(act, alpha, clamp):
    b = _rand(3, seed=10)
    # relu/lrelu have a kink at x + b == 0: keep the pre-activation away from it.
    x = _away_from(_rand(2, 3, 2, seed=9) + b[None, :, None], [0.0]) - b[None, :, None]
    if clamp is not None:
        # The clamp's derivative jumps at +-clamp: make sure no output sits there,
        # and that both the clamped and the pass-through regions are exercised.
        out = bias_act(x, b, act=act, alpha=alpha).abs()
        assert ((out - clamp).abs() > 0.02).all()
        assert (out > clamp).any() and (out < clamp).any()
    fn = lambda x, b: bias_act(x, b, act=act, alpha=alpha, clamp=clamp)  # noqa: E731
    inputs = (x.requires_grad_(True), b.requires_grad_(True))
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)
