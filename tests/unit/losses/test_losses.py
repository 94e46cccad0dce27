"""Adversarial formulas, gradient regularizers and GANLoss.compute per phase."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bigtrain.losses import GANLoss, d_loss, g_loss, gradient_penalty, path_lengths, r1_penalty
from bigtrain.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from bigtrain.train.phases import Phase

REAL = [2.0, 0.5]
FAKE = [-1.0, 0.3]


def sp(x):  # softplus, independently of torch
    return math.log1p(math.exp(x))


def logits():
    real = torch.tensor([[v] for v in REAL], dtype=torch.float64)
    fake = torch.tensor([[v] for v in FAKE], dtype=torch.float64)
    return real, fake


def expected(kind, net):
    r, f = REAL, FAKE
    mr, mf = sum(r) / len(r), sum(f) / len(f)
    if kind == "logistic":
        if net == "G":
            return [-math.log(1 / (1 + math.exp(-x))) for x in f]  # -log sigmoid(D(G(z)))
        return [-math.log(1 / (1 + math.exp(-a))) - math.log(1 - 1 / (1 + math.exp(-b))) for a, b in zip(r, f)]
    if kind == "hinge":
        if net == "G":
            return [-x for x in f]
        return [max(0.0, 1 - a) + max(0.0, 1 + b) for a, b in zip(r, f)]
    if kind == "wgan":
        if net == "G":
            return [-x for x in f]
        return [b - a for a, b in zip(r, f)]
    if kind == "lsgan":
        if net == "G":
            return [0.5 * (x - 1) ** 2 for x in f]
        return [0.5 * (a - 1) ** 2 + 0.5 * b ** 2 for a, b in zip(r, f)]
    if kind == "ragan":
        # Relativistic average GAN, logistic form (Jolicoeur-Martineau 2018).
        if net == "G":
            return [sp(-(b - mr)) + sp(a - mf) for a, b in zip(r, f)]
        return [sp(-(a - mf)) + sp(b - mr) for a, b in zip(r, f)]
    raise AssertionError(kind)


# Spot values computed by hand, so a wrong shared helper above cannot hide a bug.
HAND = {
    ("logistic", "G"): [1.3132616875, 0.5543552444],
    ("hinge", "D"): [0.0 + 0.0, 0.5 + 1.3],
    ("wgan", "D"): [-3.0, -0.2],
    ("lsgan", "D"): [0.5 + 0.5, 0.125 + 0.045],
}


@pytest.mark.parametrize("kind", ["logistic", "hinge", "wgan", "lsgan", "ragan"])
def test_generator_loss_matches_formula(kind):
    real, fake = logits()
    out = g_loss(kind, fake, real)
    assert out.shape == (2,)
    np.testing.assert_allclose(out.numpy(), expected(kind, "G"), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["logistic", "hinge", "wgan", "lsgan", "ragan"])
def test_discriminator_loss_matches_formula(kind):
    real, fake = logits()
    out = d_loss(kind, real, fake)
    assert out.shape == (2,)
    np.testing.assert_allclose(out.numpy(), expected(kind, "D"), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind, net", sorted(HAND))
def test_hand_computed_spot_values(kind, net):
    real, fake = logits()
    out = g_loss(kind, fake, real) if net == "G" else d_loss(kind, real, fake)
    np.testing.assert_allclose(out.numpy(), HAND[(kind, net)], rtol=1e-8, atol=1e-10)


def test_logistic_losses_are_stable_for_large_logits():
    big = torch.tensor([[200.0], [-200.0]])
    assert torch.isfinite(g_loss("logistic", big)).all()
    assert torch.isfinite(d_loss("logistic", big, -big)).all()
    assert torch.isfinite(d_loss("logistic", -big, big)).all()
    assert g_loss("logistic", big)[1].item() == pytest.approx(200.0)


def test_unknown_loss_names_choices():
    real, fake = logits()
    with pytest.raises(ValueError, match="hinge"):
        g_loss("nope", fake, real)
    with pytest.raises(ValueError, match="ragan"):
        d_loss("nope", real, fake)


# ---------------------------------------------------------------- regularizers

def test_r1_penalty_of_sum_of_squares():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    logits_ = x.square().sum(dim=[1, 2, 3]).unsqueeze(1)
    pen = r1_penalty(x, logits_)
    xn = x.detach().numpy()
    want = ((2 * xn) ** 2).sum(axis=(1, 2, 3))
    assert pen.shape == (3,)
    np.testing.assert_allclose(pen.detach().numpy(), want, rtol=1e-12)
    # second order: the penalty is differentiable (d/dx 4 sum x^2 = 8x)
    (g,) = torch.autograd.grad(pen.sum(), x)
    np.testing.assert_allclose(g.numpy(), 8 * xn, rtol=1e-12)


@pytest.mark.parametrize("target", [1.0, 0.5])
def test_gradient_penalty_linear_discriminator(target):
    torch.manual_seed(1)
    a = torch.randn(2, 3, 3, dtype=torch.float64)

    def D(x, c):
        return (x * a).sum(dim=[1, 2, 3]).unsqueeze(1)

    real = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    fake = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    gp = gradient_penalty(D, real, fake, None, target)
    norm_a = float(np.sqrt((a.numpy() ** 2).sum()))
    assert gp.shape == (4,)
    np.testing.assert_allclose(gp.detach().numpy(), (norm_a - target) ** 2, rtol=1e-12)


def test_gradient_penalty_takes_bf16_fakes_against_float32_reals():
    # ProGAN under bf16 autocast: G's fakes are bf16, the reals float32; the interpolates are float32.
    torch.manual_seed(1)
    a = torch.randn(2, 3, 3)
    seen = []

    def D(x, c):
        seen.append(x.dtype)
        return (x * a).sum(dim=[1, 2, 3]).unsqueeze(1)

    real, fake = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3).bfloat16()
    gp = gradient_penalty(D, real, fake, None, 1.0)
    assert seen == [torch.float32] and gp.dtype == torch.float32
    np.testing.assert_allclose(gp.detach().numpy(), (float(a.norm()) - 1.0) ** 2, rtol=1e-5)


def test_path_lengths_linear_generator():
    N, L, Wd, C, H, W = 3, 4, 5, 2, 3, 4
    g = torch.Generator().manual_seed(2)
    M = torch.randn(L, Wd, C, H, W, generator=g, dtype=torch.float64, requires_grad=True)
    ws = torch.randn(N, L, Wd, generator=g, dtype=torch.float64, requires_grad=True)
    img = torch.einsum("nlw,lwchx->nchx", ws, M)

    torch.manual_seed(123)
    got = path_lengths(img, ws)
    torch.manual_seed(123)
    y = (torch.randn(N, C, H, W, dtype=torch.float64) / math.sqrt(H * W)).numpy()

    Mn = M.detach().numpy()
    want = []
    for n in range(N):
        jty = np.einsum("lwchx,chx->lw", Mn, y[n])  # J^T y, one row per layer
        want.append(np.sqrt(np.mean(np.sum(jty ** 2, axis=1))))
    assert got.shape == (N,)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-10)
    # The penalty must be differentiable w.r.t. the generator's weights (create_graph=True).
    (gM,) = torch.autograd.grad(got.sum(), M)
    assert gM.abs().sum() > 0


# ---------------------------------------------------------------- GANLoss

def test_reg_intervals():
    C = GANLoss.Config
    assert GANLoss(C()).reg_intervals() == {"G": 4, "D": 16}
    assert GANLoss(C(pl_weight=0)).reg_intervals()["G"] is None
    assert GANLoss(C(gp_weight=10.0)).reg_intervals()["D"] == 1
    assert GANLoss(C(r1_gamma=0)).reg_intervals()["D"] is None
    assert GANLoss(C(r1_interval=8, pl_interval=2)).reg_intervals() == {"G": 2, "D": 8}


def tiny_nets(seed=0):
    torch.manual_seed(seed)
    G = StyleGAN2Generator(StyleGAN2Generator.Config(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128,
                                                      channel_max=16), 16, 3)
    D = StyleGAN2Discriminator(StyleGAN2Discriminator.Config(channel_base=128, channel_max=16), 16, 3)
    return SimpleNamespace(G=G, D=D)


def tiny_batch(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    return {
        "real_img": torch.rand(n, 3, 16, 16, generator=g) * 2 - 1,
        "real_c": torch.zeros(n, 0),
        "gen_z": torch.randn(n, 16, generator=g),
        "gen_c": torch.zeros(n, 0),
    }


def grads_of(net):
    return [p.grad for p in net.parameters()]


def has_grad(net):
    return any(g is not None and g.abs().sum() > 0 for g in grads_of(net))


def no_grad_at_all(net):
    return all(g is None for g in grads_of(net))


PHASES = {
    "Gmain": (Phase("Gmain", "G", "main"), {"Loss/G/main", "Loss/scores/fake"}),
    "Greg": (Phase("Greg", "G", "reg", interval=4), {"Loss/G/pl", "Loss/G/pl_mean"}),
    "Dmain": (Phase("Dmain", "D", "main"), {"Loss/D/main", "Loss/scores/real", "Loss/scores/fake"}),
    "Dreg": (Phase("Dreg", "D", "reg", interval=16), {"Loss/D/r1"}),
    "Dboth": (Phase("Dboth", "D", "both"), {"Loss/D/main", "Loss/scores/real", "Loss/scores/fake", "Loss/D/r1"}),
}


@pytest.mark.parametrize("name", list(PHASES))
def test_compute_terms_and_gradient_target(name):
    phase, want_terms = PHASES[name]
    nets = tiny_nets()
    loss = GANLoss(GANLoss.Config())
    torch.manual_seed(5)
    out = loss.compute(phase, nets, tiny_batch())
    assert set(out.terms) == want_terms
    assert out.total.ndim == 0 and torch.isfinite(out.total)
    for v in out.terms.values():
        assert not v.requires_grad and v.ndim == 0
    out.total.backward()
    if phase.net == "G":
        assert has_grad(nets.G)
        assert all(g is not None for g in grads_of(nets.G.mapping))
        if phase.terms == "reg":
            assert no_grad_at_all(nets.D)
    else:
        assert has_grad(nets.D)
        assert no_grad_at_all(nets.G)


def test_r1_only_in_reg_phases():
    nets = tiny_nets()
    loss = GANLoss(GANLoss.Config())
    for name in ("Gmain", "Greg", "Dmain"):
        torch.manual_seed(0)
        assert "Loss/D/r1" not in loss.compute(PHASES[name][0], nets, tiny_batch()).terms


def test_dreg_total_scaled_by_interval():
    totals = {}
    for interval in (1, 16):
        nets = tiny_nets(seed=3)
        loss = GANLoss(GANLoss.Config())
        torch.manual_seed(7)
        out = loss.compute(Phase("Dreg", "D", "reg", interval=interval), nets, tiny_batch(seed=4))
        totals[interval] = out.total.item()
        assert out.terms["Loss/D/r1"].item() > 0
    assert totals[1] > 0
    assert totals[16] / totals[1] == pytest.approx(16, rel=1e-5)


def test_greg_total_scaled_by_interval():
    totals = {}
    for interval in (1, 4):
        nets = tiny_nets(seed=3)
        loss = GANLoss(GANLoss.Config())
        torch.manual_seed(7)
        totals[interval] = loss.compute(Phase("Greg", "G", "reg", interval=interval), nets,
                                        tiny_batch(seed=4)).total.item()
    assert totals[1] > 0
    assert totals[4] / totals[1] == pytest.approx(4, rel=1e-5)


def test_dboth_is_main_plus_unscaled_r1():
    cfg = GANLoss.Config(r1_gamma=3.0)
    nets = tiny_nets(seed=1)
    torch.manual_seed(2)
    main = GANLoss(cfg).compute(Phase("Dmain", "D", "main"), nets, tiny_batch(seed=2))
    torch.manual_seed(2)
    both = GANLoss(cfg).compute(Phase("Dboth", "D", "both"), nets, tiny_batch(seed=2))
    r1 = both.terms["Loss/D/r1"].item()
    assert r1 > 0
    assert both.terms["Loss/D/main"].item() == pytest.approx(main.terms["Loss/D/main"].item(), rel=1e-5)
    assert both.total.item() == pytest.approx(main.total.item() + 1.5 * r1, rel=1e-5)


def test_gp_and_drift_terms_in_both_phase():
    cfg = GANLoss.Config(type="wgan", r1_gamma=0.0, gp_weight=10.0, drift=0.001)
    loss = GANLoss(cfg)
    assert loss.reg_intervals()["D"] == 1
    torch.manual_seed(0)
    out = loss.compute(Phase("Dboth", "D", "both"), tiny_nets(), tiny_batch())
    assert {"Loss/D/gp", "Loss/D/drift", "Loss/D/main"} <= set(out.terms)
    assert "Loss/D/r1" not in out.terms
    want = out.terms["Loss/D/main"] + 10.0 * out.terms["Loss/D/gp"] + 0.001 * out.terms["Loss/D/drift"]
    assert out.total.item() == pytest.approx(want.item(), rel=1e-5)


def test_pl_mean_is_checkpointed_and_updated_by_greg():
    loss = GANLoss(GANLoss.Config(pl_decay=0.5))
    assert "pl_mean" in loss.state_dict()
    assert loss.state_dict()["pl_mean"].item() == 0.0
    nets = tiny_nets()
    torch.manual_seed(0)
    out = loss.compute(Phase("Greg", "G", "reg", interval=4), nets, tiny_batch())
    after = loss.state_dict()["pl_mean"].item()
    assert after > 0
    assert after == pytest.approx(out.terms["Loss/G/pl_mean"].item())
    # restoring a checkpoint restores the running mean
    fresh = GANLoss(GANLoss.Config())
    fresh.load_state_dict(loss.state_dict())
    assert fresh.pl_mean.item() == pytest.approx(after)
    # main phases leave it alone
    torch.manual_seed(0)
    loss.compute(Phase("Gmain", "G", "main"), nets, tiny_batch())
    assert loss.pl_mean.item() == pytest.approx(after)


def test_gmain_updates_w_avg_but_dmain_does_not():
    nets = tiny_nets()
    loss = GANLoss(GANLoss.Config())
    before = nets.G.mapping.w_avg.clone()
    torch.manual_seed(0)
    loss.compute(Phase("Dmain", "D", "main"), nets, tiny_batch())
    assert torch.equal(nets.G.mapping.w_avg, before)
    torch.manual_seed(0)
    loss.compute(Phase("Gmain", "G", "main"), nets, tiny_batch())
    assert not torch.equal(nets.G.mapping.w_avg, before)


def test_ragan_generator_phase_uses_real_images():
    nets = tiny_nets()
    loss = GANLoss(GANLoss.Config(type="ragan", style_mixing_prob=0.0))
    b1 = tiny_batch(seed=0)
    b2 = dict(b1, real_img=-b1["real_img"])
    torch.manual_seed(0)
    t1 = loss.compute(Phase("Gmain", "G", "main"), nets, b1).total.item()
    torch.manual_seed(0)
    t2 = loss.compute(Phase("Gmain", "G", "main"), nets, b2).total.item()
    assert t1 != t2


def test_regularizers_say_what_they_need():
    """The regularizers switched on, and what they need of a strategy, by the config key that brings
    it (what DeepSpeed's ZeRO-3 checks instead of the loss's fields)."""
    from bigtrain.distributed.strategy.base import SECOND_ORDER, WEIGHTS_OUTSIDE_FORWARD
    C = GANLoss.Config
    assert GANLoss(C()).needs() == {SECOND_ORDER: ["loss.r1_gamma", "loss.pl_weight"]}
    assert GANLoss(C(r1_gamma=0, pl_weight=0)).needs() == {}
    loss = GANLoss(C(r1_gamma=0, pl_weight=0, gp_weight=10.0, ortho_weight=1e-4))
    assert loss.needs() == {SECOND_ORDER: ["loss.gp_weight"], WEIGHTS_OUTSIDE_FORWARD: ["loss.ortho_weight"]}
    assert [(r.net, r.interval, r.lazy) for r in loss.regularizers()] == [("D", 1, True), ("G", 1, False)]
    assert loss.reg_intervals() == {"G": None, "D": 1}  # orthogonal regularization joins G's main step


def _convolutions(phase_name, mode="wgrad", **cfg):
    """(largest kernel of any convolution, whether bigtrain.ops.conv's own op ran) in one phase's
    compute and backward on the tiny nets (16x16)."""
    from torch.profiler import profile
    from bigtrain.ops import conv
    conv.set_double_backward(mode)
    try:
        nets, loss = tiny_nets(), GANLoss(GANLoss.Config(**cfg))
        torch.manual_seed(0)
        with profile(record_shapes=True) as prof:
            loss.compute(PHASES[phase_name][0], nets, tiny_batch()).total.backward()
    finally:
        conv.set_double_backward("wgrad")
    events = prof.events()
    sizes = [e.input_shapes[1][-1] for e in events if e.name in ("aten::convolution", "aten::_convolution")
             and len(e.input_shapes) > 1 and len(e.input_shapes[1]) == 4]
    return max(sizes), any(e.name == "_Conv" for e in events)


@pytest.mark.parametrize("name,cfg", [("Dreg", {}), ("Dboth", {}), ("Greg", {}),
                                      ("Dboth", dict(type="wgan", r1_gamma=0.0, gp_weight=10.0))])
def test_regularized_passes_take_the_weight_gradient_kernel(name, cfg):
    """R1, path length and the gradient penalty differentiate their passes twice through bigtrain's
    convolutions (no convolution with a feature-map-sized kernel); torch's own double backward, for
    comparison, runs one (the 16x16 images, or their 8x8 or 4x4 feature maps)."""
    assert _convolutions(name, **cfg) == (4, True)
    big, ours = _convolutions(name, mode="autograd", **cfg)
    assert big > 4 and not ours


@pytest.mark.parametrize("name", ["Gmain", "Dmain"])
def test_main_passes_run_torchs_convolutions(name):
    assert _convolutions(name)[1] is False
