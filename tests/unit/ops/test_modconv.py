"""Tests for conv2d_resample, modulated_conv2d and resolve_impl."""

import pytest
import torch
import torch.nn.functional as F

from bigtrain.ops import bias_act, conv2d_resample, modulated_conv2d, setup_filter, upfirdn2d
from bigtrain.ops._impl import resolve_impl
from bigtrain.ops.conv2d_resample import _conv2d_resample_ref
from bigtrain.ops.modconv import _modulated_conv2d_ref


def _rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _naive_conv2d_resample(x, w, f, up, down, k, groups):
    """Naive composition written out with explicit paddings for a 4-tap filter.

    upsample: zero-insert + filter with the centring pads (2, 1) of a 4-tap
    filter at up=2, plus the conv's k//2, then a stride-1 "valid" conv.
    downsample: filter with pads (1, 1) + k//2, stride-1 conv, keep every 2nd.
    """
    assert f.shape[-1] == 4 and k % 2 == 1
    p = k // 2
    if up == 2:
        y = upfirdn2d(x, f, up=2, padding=[2 + p, 1 + p, 2 + p, 1 + p], gain=4)
        return F.conv2d(y, w, groups=groups)
    assert down == 2
    y = upfirdn2d(x, f, padding=[1 + p, 1 + p, 1 + p, 1 + p])
    return F.conv2d(y, w, groups=groups)[:, :, ::2, ::2]


# --- conv2d_resample -----------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("up,down", [(2, 1), (1, 2)])
@pytest.mark.parametrize("separable", [True, False])
def test_conv2d_resample_matches_naive(k, groups, up, down, separable):
    dtype = torch.float32
    x = _rand(2, 8, 6, 6, seed=1, dtype=dtype)
    w = _rand(12, 8 // groups, k, k, seed=2, dtype=dtype)
    f = setup_filter([1, 3, 3, 1], separable=separable)
    y = conv2d_resample(x, w, f, up=up, down=down, padding=k // 2, groups=groups)
    assert y.shape == (2, 12, 6 * up // down, 6 * up // down)
    ref = _naive_conv2d_resample(x, w, f, up, down, k, groups)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        y, _conv2d_resample_ref(x, w, f, up=up, down=down, padding=k // 2, groups=groups), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "kh,kw,up,down,padding",
    [(3, 3, 3, 1, 1), (2, 3, 2, 1, [0, 1, 2, -1]), (3, 2, 1, 2, [1, 0, 1, 1]), (3, 3, (2, 1), 1, 1), (1, 1, 3, 1, 0)],
)
def test_conv2d_resample_odd_configs_match_reference(kh, kw, up, down, padding):
    x = _rand(1, 4, 5, 6, seed=3)
    w = _rand(6, 2, kh, kw, seed=4)
    f = _rand(5, seed=5)
    y = conv2d_resample(x, w, f, up=up, down=down, padding=padding, groups=2)
    ref = _conv2d_resample_ref(x, w, f, up=up, down=down, padding=padding, groups=2)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
def test_conv2d_resample_flip_weight(up, down):
    x = _rand(1, 3, 6, 6, seed=6)
    w = _rand(2, 3, 3, 3, seed=7)  # asymmetric kernel
    f = setup_filter([1, 3, 3, 1]).double()
    a = conv2d_resample(x, w, f, up=up, down=down, padding=1, flip_weight=False)
    b = conv2d_resample(x, w.flip([2, 3]), f, up=up, down=down, padding=1)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(a, conv2d_resample(x, w, f, up=up, down=down, padding=1))


def test_conv2d_resample_plain_conv_and_errors():
    x = _rand(2, 4, 5, 5, seed=8)
    w = _rand(6, 2, 3, 3, seed=9)
    torch.testing.assert_close(conv2d_resample(x, w, padding=1, groups=2), F.conv2d(x, w, padding=1, groups=2))
    torch.testing.assert_close(
        conv2d_resample(x, w, padding=[0, 1, 2, 0], groups=2),
        F.conv2d(F.pad(x, [0, 1, 2, 0]), w, groups=2),
    )
    with pytest.raises(ValueError, match="groups=3"):
        conv2d_resample(x, w, groups=3)
    with pytest.raises(ValueError, match="cannot both"):
        conv2d_resample(x, w, up=2, down=2, groups=2)
    with pytest.raises(ValueError, match="empty"):
        conv2d_resample(x, _rand(6, 2, 9, 9), groups=2)


@pytest.mark.parametrize("up,down", [(2, 1), (1, 2)])
def test_conv2d_resample_gradcheck(up, down):
    x = _rand(1, 2, 4, 4, seed=10).requires_grad_(True)
    w = _rand(4, 1, 3, 3, seed=11).requires_grad_(True)
    f = setup_filter([1, 3, 3, 1]).double()
    fn = lambda x, w: conv2d_resample(x, w, f, up=up, down=down, padding=1, groups=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


# --- modulated_conv2d ------------------------------------------------------------


def _modconv_inputs(dtype, seed=0, N=3, I=4, O=5, H=6, k=3):
    x = _rand(N, I, H, H, seed=seed, dtype=dtype)
    w = _rand(O, I, k, k, seed=seed + 1, dtype=dtype)
    s = _rand(N, I, seed=seed + 2, dtype=dtype)
    return x, w, s


CONFIGS = [dict(up=1, down=1), dict(up=2, down=1), dict(up=1, down=2)]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_modconv_fused_equals_nonfused(cfg, demodulate, dtype, tol):
    x, w, s = _modconv_inputs(dtype)
    f = setup_filter([1, 3, 3, 1]).to(dtype)
    out_hw = 6 * cfg["up"] // cfg["down"]
    noise = _rand(3, 1, out_hw, out_hw, seed=9, dtype=dtype)
    kw = dict(noise=noise, padding=1, resample_filter=f, demodulate=demodulate, **cfg)
    a = modulated_conv2d(x, w, s, fused_modconv=True, **kw)
    b = modulated_conv2d(x, w, s, fused_modconv=False, **kw)
    assert a.shape == (3, 5, out_hw, out_hw) and a.dtype == dtype
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    torch.testing.assert_close(a, _modulated_conv2d_ref(x, w, s, **kw), rtol=tol, atol=tol)


def test_modconv_matches_hand_written_definition():
    # Independent of the library's own reference: one sample, no resampling.
    x, w, s = _modconv_inputs(torch.float64, N=2)
    for n in range(2):
        wn = w * s[n][None, :, None, None]
        wn = wn / (wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        ref = F.conv2d(x[n : n + 1], wn, padding=1)
        for fused in (True, False):
            out = modulated_conv2d(x, w, s, padding=1, fused_modconv=fused)
            torch.testing.assert_close(out[n : n + 1], ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_modconv_fused_grads_equal_nonfused(cfg):
    x, w, s = _modconv_inputs(torch.float64, seed=3)
    f = setup_filter([1, 3, 3, 1]).double()
    g = _rand(3, 5, 6 * cfg["up"] // cfg["down"], 6 * cfg["up"] // cfg["down"], seed=20)
    grads = []
    for fused in (True, False):
        inputs = [t.clone().requires_grad_(True) for t in (x, w, s)]
        out = modulated_conv2d(*inputs, padding=1, resample_filter=f, fused_modconv=fused, **cfg)
        grads.append(torch.autograd.grad((out * g).sum(), inputs))
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-10)


def test_modconv_flip_weight():
    x, w, s = _modconv_inputs(torch.float64, seed=4)
    f = setup_filter([1, 3, 3, 1]).double()
    for fused in (True, False):
        a = modulated_conv2d(x, w, s, up=2, padding=1, resample_filter=f, flip_weight=False, fused_modconv=fused)
        b = modulated_conv2d(x, w.flip([2, 3]), s, up=2, padding=1, resample_filter=f, fused_modconv=fused)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_demodulated_output_has_unit_variance():
    # With x ~ N(0, 1) i.i.d. and a unit-norm per-sample kernel, every output
    # pixel of a valid conv has variance exactly sum(w''^2) = 1.
    g = torch.Generator().manual_seed(1234)
    N, I, O, k, H = 4, 16, 8, 3, 34
    x = torch.randn(N, I, H, H, generator=g)
    w = torch.randn(O, I, k, k, generator=g)
    s = torch.randn(N, I, generator=g) * 3 + 1  # far from unit scale on purpose
    for fused in (True, False):
        y = modulated_conv2d(x, w, s, padding=0, fused_modconv=fused)
        var = y.var(dim=[2, 3])  # [N, O], each over 32*32 (correlated) pixels
        assert var.shape == (N, O)
        assert ((var - 1).abs() < 0.25).all(), var
        assert (var.mean() - 1).abs() < 0.05
        undemod = modulated_conv2d(x, w, s, padding=0, demodulate=False, fused_modconv=fused)
        assert undemod.var() > 10  # the check above is not vacuous


@pytest.mark.parametrize("fused", [True, False])
def test_modconv_gradcheck(fused):
    x = _rand(2, 2, 2, 2, seed=30).requires_grad_(True)
    w = _rand(2, 2, 3, 3, seed=31).requires_grad_(True)
    s = _rand(2, 2, seed=32).requires_grad_(True)
    noise = _rand(2, 1, 4, 4, seed=33)  # additive, so it only needs to be present
    f = setup_filter([1, 3, 3, 1]).double()
    fn = lambda x, w, s: modulated_conv2d(  # noqa: E731
        x, w, s, noise=noise, up=2, padding=1, resample_filter=f, fused_modconv=fused
    )
    assert torch.autograd.gradcheck(fn, (x, w, s))
    assert torch.autograd.gradgradcheck(fn, (x, w, s))


@pytest.mark.parametrize("fused", [True, False])
def test_modconv_float16_guard(fused):
    x, w, s = _modconv_inputs(torch.float32, seed=5, I=16)
    w, s = w * 300, s * 300  # x*s*w sums reach ~1e7, far beyond float16's 65504
    ref = modulated_conv2d(x, w, s, padding=1, fused_modconv=fused)
    out = modulated_conv2d(x.half(), w.half(), s.half(), padding=1, fused_modconv=fused)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    # Without demodulation there is no rescaling: the same inputs overflow.
    if not fused:
        raw = modulated_conv2d(x.half(), w.half(), s.half(), padding=1, demodulate=False, fused_modconv=fused)
        assert not torch.isfinite(raw).all()


@pytest.mark.parametrize("fused", [False, True])
def test_modconv_with_its_epilogue_is_bias_act_of_its_output(fused):
    # StyleGAN2's layers hand the bias and activation to the op (so a kernel can apply demodulation,
    # noise, bias and activation in one pass); on the reference the result is the same bits as
    # bias_act after the op, forward and backward.
    x, w, s = (t.float() for t in _modconv_inputs(torch.float64))
    noise, b = _rand(3, 1, 6, 6, seed=9, dtype=torch.float32), _rand(5, seed=10, dtype=torch.float32)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, s, noise, b)]
    ep = dict(act="lrelu", act_gain=1.5, clamp=0.6)
    x1, w1, s1, n1, b1 = leaves
    one = modulated_conv2d(x1, w1, s1, noise=n1, padding=1, fused_modconv=fused, bias=b1, **ep)
    two = bias_act(modulated_conv2d(x1, w1, s1, noise=n1, padding=1, fused_modconv=fused), b1, act="lrelu",
                   gain=1.5, clamp=0.6)
    assert torch.equal(one, two)
    r = _rand(*one.shape, seed=11, dtype=torch.float32)
    g1 = torch.autograd.grad((one * r).sum(), leaves)
    g2 = torch.autograd.grad((two * r).sum(), leaves)
    for a, c in zip(g1, g2):
        assert torch.equal(a, c)


def test_modconv_epilogue_keeps_the_convolutions_16_bit_dtype_under_autocast():
    # StyleGAN2's 16-bit blocks run under autocast: the convolution's output is bf16, and the layer's
    # output stays bf16 (as NVlabs' fp16 layers do), where multiplying by float32 demodulation
    # coefficients in a separate op promoted it to float32 (a float32 island between the convolutions).
    x, w, s = (t.float() for t in _modconv_inputs(torch.float64))
    noise, b = torch.randn(3, 1, 6, 6), torch.zeros(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = modulated_conv2d(x, w, s, noise=noise, padding=1, fused_modconv=False, bias=b, act="lrelu", clamp=256.0)
    assert y.dtype == torch.bfloat16
    want = bias_act(modulated_conv2d(x, w, s, padding=1, fused_modconv=False), b, act="lrelu", clamp=256.0,
                    addend=noise)
    torch.testing.assert_close(y.float(), want, rtol=0.05, atol=0.05)


def test_modconv_epilogue_arguments_need_act():
    x, w, s = _modconv_inputs(torch.float64)
    for kw in (dict(bias=torch.zeros(5, dtype=torch.float64)), dict(act_gain=2.0), dict(clamp=1.0)):
        with pytest.raises(ValueError, match="give act"):
            modulated_conv2d(x, w, s, padding=1, **kw)


def test_modconv_shape_errors():
    x, w, s = _modconv_inputs(torch.float64)
    with pytest.raises(ValueError, match="styles"):
        modulated_conv2d(x, w, s[:, :3])
    with pytest.raises(ValueError, match="weight"):
        modulated_conv2d(x, w[:, :3], s)


# --- resolve_impl ------------------------------------------------------------------


def test_resolve_impl():
    x = torch.zeros(1)
    assert resolve_impl("auto", x, "myop") == "ref"
    assert resolve_impl("ref", x, "myop") == "ref"
    with pytest.raises(RuntimeError, match=r"myop: impl='cuda' needs CUDA tensors, got one on cpu; use impl='auto' or 'ref'"):
        resolve_impl("cuda", x, "myop")
    with pytest.raises(ValueError, match="myop") as e:
        resolve_impl("bogus", x, "myop")
    assert "'bogus'" in str(e.value) and "'auto'" in str(e.value) and "'cuda'" in str(e.value)
