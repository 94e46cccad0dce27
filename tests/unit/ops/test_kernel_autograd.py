"""The autograd around the CUDA kernels, checked on CPU: each kernel module is replaced by an
emulator of its contract (same arguments, same outputs, computed with torch), and the ops run
with impl="cuda". The parity table of `bigtrain kernels --check` must then hold for every case,
forward, backward and double backward: this tests the backward formulas (upfirdn2d's adjoint
padding, bias_act's derivative modes, the modulated weight's demodulation gradient) that the real
kernels rely on, in seconds. The kernels' own source runs in test_kernel_emulation.py (docs/kernels.md)."""
from __future__ import annotations

import pytest
import torch

import importlib

from bigtrain.ops import _cuda, _impl, kernel_check
from bigtrain.ops.bias_act import ACTIVATIONS
from bigtrain.ops.upfirdn2d import _upfirdn2d_ref


class EmulatedUpfirdn2d:
    @staticmethod
    def upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain):
        # 1-D (separable) filters reach the kernel only where its tiled path takes them.
        assert f.dtype == torch.float32
        assert f.ndim == 2 or _cuda.separable_supported(f.shape[0], (upx, upy), (downx, downy))
        return _upfirdn2d_ref(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain)


class EmulatedBiasAct:
    @staticmethod
    def bias_act(x, b, s, a, dy, ddx, dim, act_id, mode, alpha, gain, clamp):
        spec = ACTIVATIONS[{v: k for k, v in _cuda.CUDA_ACT_IDS.items()}[act_id]]
        # The kernel's contract: s [N, C] and a [N or 1, 1, H, W], already shaped by bias_act.py.
        assert s is None or (x.ndim == 4 and dim == 1 and tuple(s.shape) == tuple(x.shape[:2]))
        assert a is None or (a.ndim == 4 and a.shape[1] == 1 and a.shape[0] in (1, x.shape[0]))
        u = x if s is None else x * s[:, :, None, None]
        u = u if a is None else u + a
        # b: 1-D over dim, or [N, C] per sample for a 4-D x with dim 1.
        assert b is None or b.ndim == 1 or (x.ndim == 4 and dim == 1 and tuple(b.shape) == tuple(x.shape[:2]))
        u = u if b is None else u + (b[:, :, None, None] if b.ndim == 2 else
                                     b.reshape([-1 if i == dim else 1 for i in range(x.ndim)]))
        with torch.enable_grad():
            u = u.detach().double().requires_grad_(True)
            z = spec.func(u, alpha if spec.def_alpha is not None else None) * gain
            (d1,) = torch.autograd.grad(z.sum(), u, create_graph=True)
            d2 = torch.autograd.grad(d1.sum(), u)[0] if d1.requires_grad else torch.zeros_like(u)
        z, d1 = z.detach(), d1.detach()
        inside = (z >= -clamp) & (z <= clamp) if clamp >= 0 else torch.ones_like(z, dtype=torch.bool)
        if mode == 0:
            out = z.clamp(-clamp, clamp) if clamp >= 0 else z
        elif mode == 1:
            out = dy.double() * d1 * inside
        else:
            out = ddx.double() * dy.double() * d2 * inside
        return out.to(x.dtype)


class EmulatedModconv:
    @staticmethod
    def modulate_weight(weight, styles, demodulate, eps):
        a = weight[None].float() * styles[:, None, :, None, None].float()
        d = (a.square().sum(dim=[2, 3, 4]) + eps).rsqrt() if demodulate else torch.ones(a.shape[:2])
        return [(a * d[:, :, None, None, None]).to(weight.dtype), d]


# The modules (bigtrain.ops re-exports functions under the same names).
upfirdn2d_mod, bias_act_mod, modconv_mod = (importlib.import_module(f"bigtrain.ops.{m}")
                                           for m in ("upfirdn2d", "bias_act", "modconv"))
EMULATORS = {"upfirdn2d": EmulatedUpfirdn2d, "bias_act": EmulatedBiasAct, "modconv": EmulatedModconv}


@pytest.fixture
def emulated(monkeypatch):
    """impl="cuda" runs the autograd Functions on CPU with the emulated kernels."""
    def resolve(impl, x, op):
        return "cuda" if impl == "cuda" else _impl.resolve_impl("ref" if impl == "auto" else impl, x, op)
    for mod in (upfirdn2d_mod, bias_act_mod, modconv_mod):
        monkeypatch.setattr(mod, "resolve_impl", resolve)
    monkeypatch.setattr(_cuda, "kernel", lambda name: EMULATORS[name])


def test_parity_table_holds_through_the_kernel_autograd(emulated):
    rows = kernel_check.check("cpu", dtypes=(torch.float32,))
    assert {r.kernel for r in rows} == {"upfirdn2d", "bias_act", "modconv"}
    assert len(rows) == 3 * (13 + 23 + 2)
    bad = [r for r in rows if not r.ok]
    assert not bad, kernel_check.format_rows(bad)


def _sabotage_upfirdn2d(monkeypatch):
    real = _cuda.adjoint_padding

    def wrong(*args):  # the adjoint shifted by one sample along x (same output size)
        x0, x1, y0, y1 = real(*args)
        return x0 + 1, x1 - 1, y0, y1
    monkeypatch.setattr(_cuda, "adjoint_padding", wrong)


def _sabotage_bias_act(monkeypatch):
    real = EmulatedBiasAct.bias_act

    def wrong(x, b, s, a, dy, ddx, dim, act_id, mode, alpha, gain, clamp):  # no second derivative
        out = real(x, b, s, a, dy, ddx, dim, act_id, mode, alpha, gain, clamp)
        return torch.zeros_like(out) if mode == 2 else out
    monkeypatch.setattr(EmulatedBiasAct, "bias_act", staticmethod(wrong))


def _sabotage_epilogue(monkeypatch):
    real = _cuda._epilogue_grads

    def wrong(g, x, b, s, a, dim, needs):  # the scale's gradient taken w.r.t. the scaled input
        d_x, d_b, d_s, d_a = real(g, x, b, s, a, dim, needs)
        return d_x, d_b, (None if d_s is None else (g * x * s[:, :, None, None]).sum(dim=[2, 3])), d_a
    monkeypatch.setattr(_cuda, "_epilogue_grads", wrong)


def _sabotage_modconv(monkeypatch):
    real = _cuda._ModulateWeight.backward

    def wrong(ctx, gw):  # the gradient through the demodulation coefficients left out
        ctx.demodulate = False
        return real(ctx, gw)
    monkeypatch.setattr(_cuda._ModulateWeight, "backward", staticmethod(wrong))


@pytest.mark.parametrize("kernel, sabotage, order", [
    ("upfirdn2d", _sabotage_upfirdn2d, "backward"),
    ("bias_act", _sabotage_bias_act, "double backward"),
    ("bias_act", _sabotage_epilogue, "backward"),
    ("modconv", _sabotage_modconv, "backward"),
])
def test_parity_table_catches_a_wrong_derivative(emulated, monkeypatch, kernel, sabotage, order):
    """The check is sharp: a wrong adjoint, a missing second derivative, a wrong gradient of the
    epilogue's scale or a missing demodulation term each fail rows of that order."""
    sabotage(monkeypatch)
    rows = kernel_check.check("cpu", dtypes=(torch.float32,), kernels={kernel})
    assert any(r.order == order and not r.ok for r in rows), kernel_check.format_rows(rows)


def test_functions_are_cached_per_static_arguments():
    a = _cuda._upfirdn2d_function((2, 2), (1, 1), (2, 1, 2, 1), False, 4.0)
    assert a is _cuda._upfirdn2d_function((2, 2), (1, 1), (2, 1, 2, 1), False, 4.0)
    assert a is not _cuda._upfirdn2d_function((2, 2), (1, 1), (2, 1, 2, 1), True, 4.0)
    assert _cuda._bias_act_functions(1, "lrelu", 0.2, 1.4, -1.0) is _cuda._bias_act_functions(1, "lrelu", 0.2, 1.4, -1.0)


def test_auto_on_cpu_is_the_reference_and_cuda_on_cpu_says_why():
    x = torch.zeros(1, 1, 4, 4)
    assert _impl.resolve_impl("auto", x, "upfirdn2d") == "ref"
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        bias_act_mod.bias_act(x, impl="cuda")
