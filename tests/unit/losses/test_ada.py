"""ADA: AugmentPipe (identity at p = 0, each transform, gradients to second order, RNG) and AdaController."""
from __future__ import annotations

import math
import traceback

import pytest
import torch
from host_waits import HostWaits
from torch.utils._python_dispatch import TorchDispatchMode

from bigtrain.losses.augment import ADA_GROUPS, ADA_TRANSFORMS, AdaController, AugmentPipe, _GridSample


def _only(name: str, p: float = 1.0) -> AugmentPipe:
    return AugmentPipe(**{t: float(t == name) for t in ADA_TRANSFORMS}, p=p)


def _images(n: int = 8, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Random colourful images in [-1, 1], different per channel (so hue / saturation act)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 2 - 1


def _smooth(n: int, size: int = 32) -> torch.Tensor:
    """Smooth, everywhere positive images (about 0.2 .. 0.8): zero-filled borders would show."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    img = torch.stack([0.5 + 0.3 * torch.sin(2 * xx + yy), 0.5 + 0.2 * torch.cos(3 * yy), 0.5 + 0.3 * xx * yy])
    return img.expand(n, 3, size, size).clone()


# --- AugmentPipe -----------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_p0_is_exact_identity(channels):
    pipe = AugmentPipe()
    assert pipe.p.dtype == torch.float32 and pipe.p.shape == () and "p" in pipe.state_dict()
    x = _images(c=channels)
    assert torch.equal(pipe(x), x)


@pytest.mark.parametrize("group", ["b", "g", "c"])
def test_each_group_alone_changes_images(group):
    x = _images()
    torch.manual_seed(0)
    y = AugmentPipe.for_groups(group, p=1.0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all() and not torch.equal(y, x)


@pytest.mark.parametrize("name", ADA_TRANSFORMS)
def test_each_transform_alone_changes_images_and_passes_gradients(name):
    x = _images().requires_grad_(True)
    torch.manual_seed(0)
    y = _only(name)(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    assert not torch.equal(y, x)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_one_channel_gets_only_brightness_and_contrast():
    x = _images(c=1)
    for name in ("lumaflip", "hue", "saturation"):
        assert torch.equal(_only(name)(x), x)
    torch.manual_seed(0)
    y = AugmentPipe.for_groups("c", p=1.0)(x)
    # Per sample an affine map of the values: y = a * x + b.
    for xi, yi in zip(x.flatten(1), y.flatten(1)):
        a = ((yi - yi.mean()) * (xi - xi.mean())).sum() / (xi - xi.mean()).square().sum()
        torch.testing.assert_close(yi, a * xi + (yi.mean() - a * xi.mean()), atol=1e-5, rtol=0)


@pytest.mark.parametrize("groups", ["b", "bgc"])
def test_r1_double_backward_reaches_d_weights(groups):
    torch.manual_seed(1)
    D = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(4, 1, 3))
    x = _images(4).requires_grad_(True)
    (g,) = torch.autograd.grad(D(AugmentPipe.for_groups(groups, p=1.0)(x)).sum(), x, create_graph=True)
    g.square().sum().backward()
    for w in (D[0].weight, D[2].weight):
        assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_grid_sample_image_gradients_to_second_order():
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    theta = torch.tensor([[[0.9, 0.3, 0.05], [-0.2, 0.8, 0.1]], [[1.1, 0.0, -0.2], [0.1, 0.7, 0.0]]],
                         dtype=torch.float64)
    grid = torch.nn.functional.affine_grid(theta, [2, 2, 7, 4], align_corners=False)
    assert torch.autograd.gradcheck(lambda v: _GridSample.apply(v, grid), (x,))
    assert torch.autograd.gradgradcheck(lambda v: _GridSample.apply(v, grid), (x,))


def test_whole_pipe_gradients_match_finite_differences():
    pipe = AugmentPipe(p=1.0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)

    def f(v):
        torch.manual_seed(3)  # same draws on every evaluation
        return pipe(v)

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5)


def test_same_rng_state_same_output():
    x = _images()
    pipe = AugmentPipe(p=0.7)
    torch.manual_seed(5)
    a = pipe(x)
    torch.manual_seed(5)
    b = pipe(x)
    assert torch.equal(a, b)
    assert not torch.equal(pipe(x), a)  # the RNG moved on


def test_xflip_flips_about_half_the_samples_exactly():
    x = torch.linspace(-1, 1, 8).expand(512, 1, 8, 8).clone()  # left-right asymmetric
    torch.manual_seed(0)
    y = _only("xflip")(x)
    flipped = (y == x.flip(3)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert (flipped ^ kept).all()  # exact: each sample is the image or its mirror
    assert 0.35 < flipped.float().mean() < 0.65


def test_transforms_are_applied_with_probability_p():
    x = _images(1000, c=3, size=4)
    torch.manual_seed(0)
    changed = (_only("brightness", p=0.3)(x) != x).flatten(1).any(1).float().mean()
    assert 0.25 < changed < 0.35
    # Two rotations, each with probability 1 - sqrt(1 - p): some rotation with probability p.
    torch.manual_seed(0)
    changed = (_only("rotate", p=0.5)(x) != x).flatten(1).any(1).float().mean()
    assert 0.45 < changed < 0.55


def test_geometric_transforms_keep_the_mean_without_black_borders():
    x = _smooth(32)
    torch.manual_seed(0)
    y = AugmentPipe.for_groups("g", p=1.0)(x)
    assert (y.mean(dim=[1, 2, 3]) - x.mean(dim=[1, 2, 3])).abs().mean() < 0.1
    assert y.min() > 0.1  # reflection padding: nothing near zero anywhere


def test_autocast_resamples_in_float32():
    x = _images(4)
    pipe = AugmentPipe(p=1.0)
    torch.manual_seed(2)
    ref = pipe(x)
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = pipe(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref)


def test_groups_cover_every_transform():
    assert sorted(t for g in ADA_GROUPS.values() for t in g) == sorted(ADA_TRANSFORMS)
    with pytest.raises(ValueError):
        AugmentPipe.for_groups("bx")


def test_the_pipe_reads_p_back_only_after_it_changed():
    pipe, x = AugmentPipe(p=0.5), _images()
    with HostWaits() as w:
        pipe(x)
    assert (len(w.reads), w.made) == (1, [])  # p, once
    with HostWaits() as w:
        y = pipe(x)
        pipe(x)
    assert (w.reads, w.made) == ([], [])
    assert not torch.equal(y, x)
    # Every way p is written is seen: in place, from a state dict, a new buffer (module.to).
    pipe.p.fill_(0.0)
    assert torch.equal(pipe(x), x)
    pipe.load_state_dict({"p": torch.tensor(0.5)})
    assert not torch.equal(pipe(x), x)
    pipe.load_state_dict({"p": torch.tensor(0.0)})
    pipe = pipe.double()
    assert torch.equal(pipe(x.double()), x.double())
    quarter = torch.tensor(0.25)
    with HostWaits() as w:
        pipe.p.copy_(quarter)
        pipe(x)
    assert len(w.reads) == 1


class _CopiesToMeta(TorchDispatchMode):
    """Copies of host tensors onto the meta device, by the function that made them: bigtrain's queued
    copy (``to_device``), else the pipe's own function."""

    def __init__(self):
        super().__init__()
        self.by: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and args[0].device.type == "cpu" and kwargs.get("device") == \
                torch.device("meta"):
            stack = traceback.extract_stack()
            self.by.append(next(f.name for f in reversed(stack) if f.filename.endswith(("augment.py", "device.py"))))
        return func(*args, **kwargs)


# Blits: G, the sample offsets and the indices; resampling: the indices and theta; colour: M.
@pytest.mark.parametrize("groups, copies_sent", [("b", 3), ("gc", 3)])
def test_the_pipe_reads_nothing_back_from_the_images_device(groups, copies_sent):
    # The meta device stands in for a GPU: its tensors hold no values, so any read of one (item, tolist,
    # a branch on it) raises. The pipe draws and decides on the host; what it sends to the images'
    # device goes through bigtrain.distributed.device.to_device, on a GPU a queued copy from pinned memory.
    torch.manual_seed(0)
    pipe = AugmentPipe.for_groups(groups, p=0.8)
    pipe(_images())  # p is read here, on the host
    pipe.resample_filter = pipe.resample_filter.to("meta")  # the pipe's buffer on the images' device
    x = torch.randn(32, 3, 16, 16, device="meta", requires_grad=True)
    with _CopiesToMeta() as copies:
        y = pipe(x)
        (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)  # as R1 differentiates it
        g.sum().backward()
    assert y.shape == x.shape and y.is_meta and x.grad.is_meta
    assert copies.by == ["to_device"] * copies_sent


# --- AdaController ---------------------------------------------------------------------------------


def _run(ctrl: AdaController, p: torch.Tensor, logits: torch.Tensor, steps: range, batch: int = 8, **kw):
    out = []
    for step in steps:
        ctrl.accumulate(logits)
        if ctrl.due(step):
            out.append(ctrl.adjust(p, batch, **kw))
    return out


def test_controller_raises_p_when_d_overfits_and_lowers_it_to_zero_otherwise():
    ctrl = AdaController(target=0.6, speed_kimg=500, interval=4)
    step = 8 * 4 / (500 * 1000)
    p = torch.zeros([])
    assert [ctrl.due(s) for s in range(8)] == [False, False, False, True] * 2
    out = _run(ctrl, p, torch.ones(8, 1), range(8))
    assert [o["augment_rt"] for o in out] == [1.0, 1.0]
    assert math.isclose(out[-1]["augment_p"], 2 * step, rel_tol=1e-6) and out[-1]["augment_p"] == float(p)
    out = _run(ctrl, p, -torch.ones(8, 1), range(12))
    assert [o["augment_rt"] for o in out] == [-1.0] * 3
    assert [o["augment_p"] for o in out] == [pytest.approx(step, rel=1e-6), 0.0, 0.0] and float(p) == 0.0


def test_controller_step_size_target_and_clamps():
    step = 16 * 2 / (100 * 1000)
    p = torch.tensor(0.5)
    ctrl = AdaController(target=0.6, speed_kimg=100, interval=2, p_max=0.5 + step / 2)
    # sign sum 2 of 4 -> r_t = 0.5 < 0.6: p falls by exactly one step.
    (out,) = _run(ctrl, p, torch.tensor([3.0, -1.0, 2.0, 0.5]), range(2), batch=16)
    assert out["augment_rt"] == 0.5 and out["augment_p"] == pytest.approx(0.5 - step, abs=1e-7)
    (out,) = _run(ctrl, p, torch.ones(4), range(2), batch=16)
    assert out["augment_p"] == pytest.approx(0.5, abs=1e-7)
    (out,) = _run(ctrl, p, torch.ones(4), range(2), batch=16)
    assert out["augment_p"] == pytest.approx(0.5 + step / 2, abs=1e-7)  # clamped at p_max


def test_controller_without_data_leaves_p():
    p = torch.tensor(0.25)
    out = AdaController().adjust(p, 32)
    assert float(p) == 0.25 and out["augment_p"] == 0.25 and math.isnan(out["augment_rt"])


def test_controller_state_dict_resumes_mid_interval_exactly():
    logits = [torch.randn(8, generator=torch.Generator().manual_seed(s)) + 0.5 for s in range(8)]
    a, pa = AdaController(interval=4), torch.tensor(0.1)
    for s in range(2):
        a.accumulate(logits[s])
    b, pb = AdaController(interval=4), torch.tensor(0.1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.state_dict()["acc"], a.state_dict()["acc"])
    outs = []
    for ctrl, p in ((a, pa), (b, pb)):
        res = []
        for s in range(2, 8):
            ctrl.accumulate(logits[s])
            if ctrl.due(s):
                res.append(ctrl.adjust(p, 8))
        outs.append(res)
    assert outs[0] == outs[1] and len(outs[0]) == 2 and torch.equal(pa, pb)
    assert a.state_dict()["acc"].tolist() == [0.0, 0.0]  # reset after adjust


def test_controller_uses_all_reduce_sums():
    calls = []

    def all_reduce(t: torch.Tensor) -> None:  # two identical ranks
        calls.append(t.clone())
        t.mul_(2)

    logits = torch.tensor([1.0, 2.0, -3.0, 4.0, 5.0, 6.0])
    plain, p0 = AdaController(interval=1), torch.tensor(0.3)
    reduced, p1 = AdaController(interval=1), torch.tensor(0.3)
    plain.accumulate(logits)
    reduced.accumulate(logits)
    a = plain.adjust(p0, 10)
    b = reduced.adjust(p1, 10, all_reduce=all_reduce)
    assert len(calls) == 1 and calls[0].tolist() == [4.0, 6.0]
    assert a == b and b["augment_rt"] == pytest.approx(4 / 6) and torch.equal(p0, p1)
    assert b["augment_p"] == pytest.approx(0.3 + 10 / (500 * 1000), abs=1e-7)


def test_p_rises_when_d_overfits_and_stays_low_when_it_cannot():
    """A real StyleGAN2 D trained on 8 images: against noise it wins (r_t -> 1) and p climbs; against
    the same images as fakes it cannot (r_t about 0 < 0.6) and p stays at 0."""
    import torch.nn.functional as F

    from bigtrain.models.stylegan2 import StyleGAN2Discriminator

    torch.manual_seed(0)
    reals = torch.rand(8, 1, 16, 16) * 2 - 1

    def final_p(fakes_are_reals: bool) -> float:
        torch.manual_seed(1)
        D = StyleGAN2Discriminator(StyleGAN2Discriminator.Config(channel_base=64, channel_max=8), 16, 1)
        pipe, ada = AugmentPipe.for_groups("bgc"), AdaController(speed_kimg=0.4, interval=1)
        opt = torch.optim.Adam(D.parameters(), 2e-3, betas=(0.0, 0.99))
        for _ in range(30):
            fakes = reals[torch.randperm(8)] if fakes_are_reals else torch.randn(8, 1, 16, 16) * 0.3
            real_logits, fake_logits = D(pipe(reals)), D(pipe(fakes))
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            ada.accumulate(real_logits)
            ada.adjust(pipe.p, 8)
        return float(pipe.p)

    assert final_p(fakes_are_reals=False) > 0.25
    assert final_p(fakes_are_reals=True) < 0.05


def test_resume_keeps_ada_p_but_a_fixed_p_is_the_configs():
    """GANLoss.load_state_dict: ADA continues the checkpoint's p; kind fixed takes p from the config
    being resumed (a changed p is the user's choice); a bad p_max is reported under its own key."""
    from bigtrain.losses import GANLoss
    from bigtrain.losses.augment import AugmentConfig

    saved = GANLoss(GANLoss.Config(), AugmentConfig(kind="ada", p=0.7)).state_dict()
    ada = GANLoss(GANLoss.Config(), AugmentConfig(kind="ada", p=0.0))
    ada.load_state_dict(saved)
    assert float(ada.augment_pipe.p) == pytest.approx(0.7)
    fixed = GANLoss(GANLoss.Config(), AugmentConfig(kind="fixed", p=0.3))
    fixed.load_state_dict(saved)
    assert float(fixed.augment_pipe.p) == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]") as bad:
        AugmentConfig(kind="ada", p_max=1.5)
    assert bad.value.key == "p_max"
