"""bigtrain.ops.conv: convolutions whose second-order gradients use the weight-gradient kernel."""

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

from bigtrain.ops import conv as C
from bigtrain.ops import conv2d_resample, setup_filter


def _rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


@pytest.fixture(autouse=True)
def _default_mode():
    yield
    C.set_double_backward("wgrad")


# (transposed, stride, padding, output_padding, groups, k); the input is 5x6 so that a strided
# conv leaves rows and columns unread and the input gradient must be padded back to size.
SPECS = [(False, 1, 1, 0, 1, 3), (False, 2, 0, 0, 1, 3), (False, 2, 1, 0, 2, 4), (False, 1, 0, 0, 3, 1),
         (True, 2, 0, 0, 1, 3), (True, 2, 1, 1, 2, 3), (True, 1, 1, 0, 1, 3)]


def _op(spec):
    """(ours inside a second-order region, torch's, the weight's shape)"""
    transposed, s, p, op, g, k = spec

    def ours(x, w):
        with C.second_order():
            return C.conv_transpose2d(x, w, s, p, op, g) if transposed else C.conv2d(x, w, s, p, g)

    def plain(x, w):
        return F.conv_transpose2d(x, w, None, s, p, op, g) if transposed else F.conv2d(x, w, None, s, p, 1, g)
    return ours, plain, (6, 6 // g, k, k)


@pytest.mark.parametrize("spec", SPECS)
def test_gradients_of_first_and_second_order_are_exact(spec):
    ours, _, wshape = _op(spec)
    x = _rand(2, 6, 5, 6, seed=1).requires_grad_(True)
    w = _rand(*wshape, seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(ours, (x, w))
    assert torch.autograd.gradgradcheck(ours, (x, w))


@pytest.mark.parametrize("spec", SPECS)
def test_regularizer_gradients_equal_autograds(spec):
    """What R1 and path length compute: the gradient of a penalty on an input gradient, for the
    weight and the input, and the value itself, equal F.conv2d's with autograd's double backward."""
    ours, plain, wshape = _op(spec)
    x0, w0 = _rand(2, 6, 5, 6, seed=3), _rand(*wshape, seed=4)

    def penalty(fn):
        x, w = x0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
        y = fn(x, w)
        g, = torch.autograd.grad((y.tanh() * y).sum(), x, create_graph=True)
        return (y.detach(), *torch.autograd.grad(g.square().sum(), [w, x]))

    for a, b in zip(penalty(ours), penalty(plain)):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-10, atol=1e-10)


def _largest_kernel(fn) -> int:
    """The largest kernel of any convolution run by an R1-style double backward through ``fn``."""
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, requires_grad=True)
    with profile(record_shapes=True) as prof:
        with C.second_order():
            y = fn(x, w)
        g, = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        g.square().sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    sizes = [e.input_shapes[1][-1] for e in prof.events() if e.name in ("aten::convolution", "aten::_convolution")
             and len(e.input_shapes) > 1 and len(e.input_shapes[1]) == 4]
    assert sizes
    return max(sizes)


def test_double_backward_never_convolves_with_the_feature_map():
    """The point of the op: autograd's double backward convolves with a 16x16 kernel (the feature
    map); ours runs only 3x3 convolutions and the weight-gradient kernel."""
    fn = lambda x, w: F.leaky_relu(C.conv2d(x, w, 1, 1), 0.2)  # noqa: E731
    assert _largest_kernel(fn) == 3
    C.set_double_backward("autograd")
    assert _largest_kernel(fn) == 16


def test_conv2d_resample_and_the_fir_reference_take_it():
    """Both the 3x3 convolutions and the reference upfirdn2d's depthwise 4-tap filter passes (whose
    feature-map-sized "weight gradient" autograd computed even for a filter that needs none)."""
    f = setup_filter([1, 3, 3, 1])
    for kw in (dict(up=2), dict(down=2), dict()):
        fn = lambda x, w: conv2d_resample(x, w, f, padding=1, **kw)  # noqa: E731
        assert _largest_kernel(fn) <= 4, kw
    C.set_double_backward("autograd")
    assert _largest_kernel(lambda x, w: conv2d_resample(x, w, f, padding=1, up=2)) == 32


def test_plain_functions_outside_a_region_and_where_no_gradient_is_recorded():
    x, w = _rand(1, 2, 5, 5, dtype=torch.float32), _rand(3, 2, 3, 3, dtype=torch.float32).requires_grad_(True)
    # Outside second_order(): torch's own op (first-order passes cost nothing extra).
    assert type(C.conv2d(x, w, padding=1).grad_fn).__name__ == "ConvolutionBackward0"
    with C.second_order():
        assert type(C.conv2d(x, w, padding=1).grad_fn).__name__ == "_ConvBackward"
        with C.second_order():  # nested regions
            pass
        assert type(C.conv2d(x, w, padding=1).grad_fn).__name__ == "_ConvBackward"
        with torch.no_grad():
            assert C.conv2d(x, w, padding=1).grad_fn is None
        assert C.conv2d(x, w.detach(), padding=1).grad_fn is None
        # Tracing (TorchScript and ONNX export) records the plain aten op.
        traced = torch.jit.trace(lambda x, w: C.conv2d(x, w, padding=1), (x, w))
        assert "aten::_convolution" in str(traced.graph) and "_Conv" not in str(traced.graph)
        assert torch.equal(traced(x, w), F.conv2d(x, w, padding=1))
        C.set_double_backward("autograd")
        assert type(C.conv2d(x, w, padding=1).grad_fn).__name__ == "ConvolutionBackward0"
    C.set_double_backward("wgrad")
    assert type(C.conv2d(x, w, padding=1).grad_fn).__name__ == "ConvolutionBackward0"


def test_autocast_casts_as_autocast_would():
    x = _rand(2, 4, 8, 8, dtype=torch.float32).requires_grad_(True)
    w = _rand(4, 4, 3, 3, seed=1, dtype=torch.float32).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16), C.second_order():
        y = C.conv2d(x, w, padding=1)
        ref = F.conv2d(x, w, padding=1)
    assert y.dtype == ref.dtype == torch.bfloat16 and torch.equal(y, ref)
    g, = torch.autograd.grad(y.float().square().sum(), x, create_graph=True)
    g.square().sum().backward()
    assert x.grad.dtype == w.grad.dtype == torch.float32 and torch.isfinite(w.grad).all()


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="'fast'.*'wgrad', 'autograd'"):
        C.set_double_backward("fast")
    assert C.double_backward_mode() == "wgrad"


def test_float32_block_differentiated_twice_inside_an_outer_autocast():
    """StyleGAN2's mixed precision: a float32 block (autocast off around it) inside the step's bf16
    autocast, and R1's autograd.grad called under that autocast. The gradients stay float32 and equal
    those computed with no autocast at all (the backward must not autocast its convolutions)."""
    x0, w0 = _rand(2, 4, 8, 8, dtype=torch.float32), _rand(4, 4, 3, 3, seed=1, dtype=torch.float32)

    def r1(outer):
        x, w = x0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
        with outer:
            with torch.autocast("cpu", enabled=False), C.second_order():
                y = C.conv2d(x, w, padding=1)
            g, = torch.autograd.grad(y.square().sum(), x, create_graph=True)
            g.square().sum().backward()
        return g, w.grad

    got = r1(torch.autocast("cpu", dtype=torch.bfloat16))
    want = r1(torch.autocast("cpu", enabled=False))
    for a, b in zip(got, want):
        assert a.dtype == torch.float32 and torch.equal(a, b)
