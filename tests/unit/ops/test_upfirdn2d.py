"""Tests for bigtrain.ops.upfirdn2d: scipy cross-checks, wrappers, gradients."""

import numpy as np
import pytest
import scipy.signal
import torch

from bigtrain.ops import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d


def _rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _axis_ref(a, h, up, down, p0, p1, axis):
    """1-D upfirdn along `axis` for arbitrary padding, built on scipy's full output.

    Our op satisfies out[o] = full[o*down + taps - 1 - p0] where `full` is
    scipy.signal.upfirdn(h, a, up, 1) zero-extended on both sides.
    """
    a = np.moveaxis(a, axis, -1)
    n, t = a.shape[-1], len(h)
    full = scipy.signal.upfirdn(h, a, up, 1, axis=-1)
    out_len = (n * up + p0 + p1 - t) // down + 1
    idx = np.arange(out_len) * down + t - 1 - p0
    inside = (idx >= 0) & (idx < full.shape[-1])
    out = np.take(full, np.clip(idx, 0, full.shape[-1] - 1), axis=-1) * inside
    return np.moveaxis(out, -1, axis)


# --- scipy cross-checks ------------------------------------------------------


@pytest.mark.parametrize(
    "up,down,taps",
    [(1, 1, 4), (2, 1, 4), (2, 1, 3), (1, 2, 4), (1, 2, 5), (2, 2, 4), (3, 1, 5), (3, 2, 6), (2, 3, 3), (4, 1, 2)],
)
def test_matches_scipy_upfirdn_full_output(up, down, taps):
    x = _rand(2, 3, 5, 7, seed=up * 10 + down)
    f = _rand(taps, seed=taps)
    # scipy upsamples to (n-1)*up+1 samples and returns the full convolution:
    # that is p0 = taps-1 before and p1 = taps-up after in our convention.
    pad = [taps - 1, taps - up, taps - 1, taps - up]
    y = upfirdn2d(x, f, up=up, down=down, padding=pad)
    ref = scipy.signal.upfirdn(f.numpy(), x.numpy(), up, down, axis=3)
    ref = scipy.signal.upfirdn(f.numpy(), ref, up, down, axis=2)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "upx,upy,downx,downy,taps,pad",
    [
        (1, 1, 1, 1, 3, [0, 0, 0, 0]),
        (2, 2, 1, 1, 4, [-1, 2, 3, -2]),
        (1, 1, 2, 2, 4, [1, 1, -1, 0]),
        (2, 1, 1, 2, 3, [2, -1, 0, 3]),
        (3, 2, 2, 3, 5, [-2, -3, 1, 4]),
        (2, 2, 2, 2, 4, [2, 1, 2, 1]),
        (1, 3, 3, 1, 2, [0, -2, -1, 0]),
    ],
)
def test_matches_scipy_per_axis_with_crop(upx, upy, downx, downy, taps, pad):
    x = _rand(1, 2, 6, 5, seed=taps + upx)
    f = _rand(taps, seed=7)
    y = upfirdn2d(x, f, up=(upx, upy), down=(downx, downy), padding=pad)
    ref = _axis_ref(x.numpy(), f.numpy(), upx, downx, pad[0], pad[1], axis=3)
    ref = _axis_ref(ref, f.numpy(), upy, downy, pad[2], pad[3], axis=2)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_2d_filter_matches_convolve2d():
    x = _rand(2, 3, 6, 7, seed=1)
    f = _rand(3, 4, seed=2)  # [taps_y, taps_x], non-square and non-separable
    y = upfirdn2d(x, f, padding=[3, 3, 2, 2])
    ref = np.stack([[scipy.signal.convolve2d(c, f.numpy(), mode="full") for c in n] for n in x.numpy()])
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_2d_filter_with_upsampling_matches_convolve2d():
    x = _rand(1, 2, 4, 5, seed=3)
    f = _rand(3, 3, seed=4)
    up = 2
    xu = np.zeros((1, 2, 4 * up, 5 * up))
    xu[:, :, ::up, ::up] = x.numpy()
    ref = np.stack([[scipy.signal.convolve2d(c, f.numpy(), mode="full") for c in n] for n in xu])
    y = upfirdn2d(x, f, up=up, padding=2)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)
    # With down=2 we keep every other sample of the same signal.
    y2 = upfirdn2d(x, f, up=up, down=2, padding=2)
    np.testing.assert_allclose(y2.numpy(), ref[:, :, ::2, ::2], rtol=1e-12, atol=1e-12)


def test_separable_equals_outer_product():
    x = _rand(2, 3, 6, 6, seed=5)
    f = _rand(4, seed=6)
    a = upfirdn2d(x, f, up=2, down=1, padding=[1, 2, 0, 3])
    b = upfirdn2d(x, torch.outer(f, f), up=2, down=1, padding=[1, 2, 0, 3])
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_flip_filter_is_correlation():
    x = _rand(1, 2, 5, 6, seed=8)
    f = _rand(3, 2, seed=9)
    y = upfirdn2d(x, f, padding=[1, 1, 2, 2], flip_filter=True)
    ref = np.stack([[scipy.signal.correlate2d(c, f.numpy(), mode="full") for c in n] for n in x.numpy()])
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)
    f1 = _rand(4, seed=10)
    torch.testing.assert_close(
        upfirdn2d(x, f1, up=2, padding=2, flip_filter=True), upfirdn2d(x, f1.flip(0), up=2, padding=2)
    )


@pytest.mark.parametrize("gain", [3.0, 0.25, -2.0])
@pytest.mark.parametrize("ndim", [1, 2])
def test_gain_applied_once(gain, ndim):
    x = _rand(1, 2, 5, 5, seed=11)
    f = _rand(*([4] * ndim), seed=12)
    a = upfirdn2d(x, f, up=2, down=1, padding=2, gain=gain)
    b = upfirdn2d(x, f, up=2, down=1, padding=2) * gain
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_padding_formats_and_none_filter():
    x = _rand(1, 1, 4, 5, seed=13)
    f = _rand(3, seed=14)
    torch.testing.assert_close(upfirdn2d(x, f, padding=2), upfirdn2d(x, f, padding=[2, 2, 2, 2]))
    torch.testing.assert_close(upfirdn2d(x, f, padding=(1, 3)), upfirdn2d(x, f, padding=[1, 1, 3, 3]))
    torch.testing.assert_close(upfirdn2d(x, None), x)
    torch.testing.assert_close(upfirdn2d(x, None, padding=[-1, 0, 0, -2]), x[:, :, :-2, 1:])
    y = upfirdn2d(x, None, up=2)
    assert y.shape == (1, 1, 8, 10)
    torch.testing.assert_close(y[:, :, ::2, ::2], x)
    assert y[:, :, 1::2].abs().sum() == 0 and y[:, :, :, 1::2].abs().sum() == 0


def test_float32_and_output_dtype():
    x = _rand(1, 2, 4, 4, dtype=torch.float32)
    y = upfirdn2d(x, setup_filter([1, 3, 3, 1]).double(), up=2, padding=[2, 1, 2, 1])
    assert y.dtype == torch.float32 and y.shape == (1, 2, 8, 8)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(up=0), "up"),
        (dict(down=(2, 0)), "down"),
        (dict(up=1.5), "up"),
        (dict(padding=[1, 2, 3]), "padding"),
        (dict(padding=-10), "empty"),
        (dict(impl="bogus"), "bogus"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    x = _rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match=match):
        upfirdn2d(x, torch.ones(3, dtype=torch.float64), **kwargs)


def test_bad_filter_and_input_raise():
    with pytest.raises(ValueError, match="4-D"):
        upfirdn2d(_rand(4, 4), None)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        upfirdn2d(_rand(1, 1, 4, 4), torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="setup_filter"):
        upfirdn2d(_rand(1, 1, 4, 4), [1, 2, 1])


def test_cuda_impl_unavailable():
    with pytest.raises(RuntimeError, match="upfirdn2d: impl='cuda' needs CUDA tensors"):
        upfirdn2d(_rand(1, 1, 4, 4), None, impl="cuda")


# --- setup_filter ------------------------------------------------------------


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.shape == (4,)
    torch.testing.assert_close(f, torch.tensor([1, 3, 3, 1]) / 8.0)
    f2 = setup_filter([1, 3, 3, 1], separable=False)
    assert f2.shape == (4, 4)
    torch.testing.assert_close(f2, torch.outer(f, f))
    assert float(f2.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(setup_filter(None), torch.ones(1))
    torch.testing.assert_close(setup_filter([1, 2, 3], normalize=False, flip_filter=True), torch.tensor([3.0, 2, 1]))
    # 1-D gain is split sqrt/sqrt so the effective 2-D filter gets it once.
    g = setup_filter([1, 3, 3, 1], gain=4)
    assert float(torch.outer(g, g).sum()) == pytest.approx(4.0)
    g2 = setup_filter([[1, 2], [3, 4]], gain=-2)
    assert float(g2.sum()) == pytest.approx(-2.0)
    torch.testing.assert_close(setup_filter(np.array([[1.0, 2.0], [3.0, 4.0]]), normalize=False).flip([0, 1]),
                               setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True))
    with pytest.raises(ValueError, match="sum to 0"):
        setup_filter([1, -1])
    with pytest.raises(ValueError, match="separable=True"):
        setup_filter([[1, 2], [3, 4]], separable=True)
    with pytest.raises(ValueError, match="gain"):
        setup_filter([1, 1], gain=-1)


# --- wrappers ------------------------------------------------------------------


@pytest.mark.parametrize("separable", [True, False])
def test_wrappers_shapes_and_constant_image(separable):
    f = setup_filter([1, 3, 3, 1], separable=separable).double()
    x = torch.full((1, 2, 8, 10), 2.5, dtype=torch.float64)
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 16, 20)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 2.5))
    dn = downsample2d(x, f)
    assert dn.shape == (1, 2, 4, 5)
    torch.testing.assert_close(dn[:, :, 1:-1, 1:-1], torch.full_like(dn[:, :, 1:-1, 1:-1], 2.5))
    fl = filter2d(x, f)
    assert fl.shape == x.shape
    torch.testing.assert_close(fl[:, :, 2:-2, 2:-2], x[:, :, 2:-2, 2:-2])
    assert upsample2d(x, f, up=3).shape == (1, 2, 24, 30)
    assert downsample2d(_rand(1, 1, 9, 7), f).shape == (1, 1, 4, 3)
    assert filter2d(x, f, padding=1).shape == (1, 2, 10, 12)


def test_wrappers_are_centred():
    # A linear ramp is reproduced exactly by symmetric interpolation filters, so
    # the interior values reveal the sub-pixel alignment of each wrapper.
    W = 12
    ramp = torch.arange(W, dtype=torch.float64).expand(1, 1, 8, W)
    # up=2: input i sits at output position 2i + 0.5.
    y = upsample2d(ramp, setup_filter([1, 3, 3, 1]).double(), up=(2, 1))
    n = torch.arange(2 * W, dtype=torch.float64)
    torch.testing.assert_close(y[0, 0, 4, 3:-3], ((n - 0.5) / 2)[3:-3])
    # up=3 with the width-3 triangle: input i sits at output position 3i + 1.
    y = upsample2d(ramp, setup_filter([1, 2, 3, 2, 1]).double(), up=(3, 1))
    n = torch.arange(3 * W, dtype=torch.float64)
    torch.testing.assert_close(y[0, 0, 4, 3:-3], ((n - 1) / 3)[3:-3])
    # down=2: output o sits at input position 2o + 0.5.
    y = downsample2d(ramp, setup_filter([1, 3, 3, 1]).double(), down=(2, 1))
    o = torch.arange(W // 2, dtype=torch.float64)
    torch.testing.assert_close(y[0, 0, 4, 1:-1], (2 * o + 0.5)[1:-1])
    # odd filter: no shift at all.
    y = filter2d(ramp, setup_filter([1, 2, 1]).double())
    torch.testing.assert_close(y[0, 0, 4, 1:-1], ramp[0, 0, 4, 1:-1])


def test_upsample_gain_and_flip_pass_through():
    x = _rand(1, 1, 4, 4, seed=20)
    f = _rand(3, seed=21)
    torch.testing.assert_close(upsample2d(x, f, gain=3), 3 * upsample2d(x, f))
    torch.testing.assert_close(upsample2d(x, f, flip_filter=True), upsample2d(x, f.flip(0)))


# --- gradients ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=1), dict(up=2, down=2, padding=[1, 0, -1, 2])],
)
@pytest.mark.parametrize("ndim", [1, 2])
def test_gradcheck(kwargs, ndim):
    x = _rand(1, 2, 4, 4, seed=30).requires_grad_(True)
    f = _rand(*([4] * ndim), seed=31).requires_grad_(True)
    fn = lambda x, f: upfirdn2d(x, f, gain=1.5, **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, f))
    assert torch.autograd.gradgradcheck(fn, (x, f))


def test_centring_rounding_convention_for_odd_totals():
    # When the ideal leading pad is fractional, it is rounded up (pinned here so
    # that checkpoints/kernels stay consistent): up=2 with 3 taps pads (2, 0),
    # down=2 with 3 taps pads (1, 0).
    x = _rand(1, 1, 6, 6, seed=40)
    f = _rand(3, seed=41)
    torch.testing.assert_close(upsample2d(x, f), upfirdn2d(x, f, up=2, padding=[2, 0, 2, 0], gain=4))
    torch.testing.assert_close(downsample2d(x, f), upfirdn2d(x, f, down=2, padding=[1, 0, 1, 0]))
    torch.testing.assert_close(filter2d(x, _rand(4, seed=42)), upfirdn2d(x, _rand(4, seed=42), padding=[2, 1, 2, 1]))
