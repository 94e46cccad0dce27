"""BigGAN: spectral norm, orthogonal regularization, conditioning, hierarchical latents,
truncation, (cross-replica) batch norm on one process, standing statistics, presets."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bigtrain.config import build
from bigtrain.models.sampling import standing_stats
from bigtrain.losses.regularizers import orthogonal_penalty
from bigtrain.models import get_family
from bigtrain.models.biggan.layers import BatchNorm, ConditionalBatchNorm, SNConv2d, SNLinear
from bigtrain.models.biggan.generator import truncate_z
from bigtrain.models.biggan.presets import PRESETS

SPEC = get_family("biggan")
GCFG = {"z_dim": 15, "ch": 4, "ch_mult": [4, 4, 2], "attn_res": [8], "shared_dim": 8}
DCFG = {"ch": 4, "ch_mult": [2, 4, 4], "attn_res": [8]}


def build_nets(c_dim=3, seed=0, **g):
    torch.manual_seed(seed)
    G = SPEC.build_generator(build(SPEC.generator.Config, {**GCFG, **g}), 16, 3, c_dim)
    D = SPEC.build_discriminator(build(SPEC.discriminator.Config, DCFG), 16, 3, c_dim)
    return G, D


def onehot(labels, n=3):
    return F.one_hot(torch.tensor(labels), n).float()


@pytest.mark.parametrize("make", [lambda: SNLinear(20, 30), lambda: SNConv2d(6, 5, 3)])
def test_power_iteration_converges_to_the_largest_singular_value(make):
    # The layer is built here, seeded, and its weight given a known spectrum (top two singular values
    # 2 and 1.5): with a random weight, the top two can lie close enough that 200 iterations do not
    # converge, and which weight a worker drew depended on collection order (a CI failure).
    torch.manual_seed(0)
    layer = make()
    W0 = layer.weight.detach().flatten(1)
    U, _, Vh = torch.linalg.svd(torch.randn_like(W0), full_matrices=False)
    spectrum = torch.linspace(1.5, 0.1, len(U.T))
    spectrum[0] = 2.0
    with torch.no_grad():
        layer.weight.copy_((U @ torch.diag(spectrum) @ Vh).reshape(layer.weight.shape))
    x = torch.randn(2, 20) if isinstance(layer, SNLinear) else torch.randn(2, 6, 4, 4)
    layer.train()
    layer(x)
    u = layer.sn_u.clone()
    layer(x)
    assert torch.equal(layer.sn_u, u)  # no weight change, no iteration: forwards per step do not matter
    for _ in range(200):  # one power iteration per optimizer step (the trainer notifies it)
        layer.weights_changed()
        layer(x)
    W = layer.weight.detach().flatten(1)
    top = torch.linalg.matrix_norm(W, 2)
    assert layer.sn_sigma.item() == pytest.approx(top.item(), rel=1e-4)
    assert torch.linalg.matrix_norm(layer.sn_weight().detach().flatten(1), 2).item() == pytest.approx(1, rel=1e-4)
    # In eval mode the estimate is frozen.
    u = layer.sn_u.clone()
    layer.eval()
    layer(x)
    assert torch.equal(layer.sn_u, u)


@pytest.mark.parametrize("make", [lambda: SNLinear(20, 30), lambda: SNConv2d(6, 5, 3)])
def test_spectral_norm_under_bf16_autocast_keeps_its_float32_estimate(make):
    # bf16 training of BigGAN: the power iteration and sigma stay float32 (it failed on a float32 u
    # against a bf16 product), the layer's output is bf16 as autocast asks.
    torch.manual_seed(0)
    plain, cast = make(), make()
    cast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 20) if isinstance(plain, SNLinear) else torch.randn(2, 6, 4, 4)
    plain.train(), cast.train()
    plain(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = cast(x)
    assert y.dtype == torch.bfloat16
    assert cast.sn_u.dtype == cast.sn_sigma.dtype == torch.float32
    assert torch.equal(cast.sn_u, plain.sn_u) and torch.equal(cast.sn_sigma, plain.sn_sigma)


def test_orthogonal_penalty_matches_its_formula():
    torch.manual_seed(0)
    W1, W2 = torch.randn(4, 6), torch.randn(3, 2, 3, 3)
    expected = 0.0
    for W in (W1, W2.flatten(1)):
        for i in range(W.shape[0]):
            for j in range(W.shape[0]):
                if i != j:
                    expected += float(W[i] @ W[j]) ** 2
    assert orthogonal_penalty([W1, W2]).item() == pytest.approx(expected, rel=1e-5)
    # Orthogonal rows of any norms cost nothing: only the off-diagonal of W W^T counts.
    Q = torch.linalg.qr(torch.randn(6, 6))[0][:4] * torch.tensor([[1.0], [2.0], [3.0], [0.5]])
    assert orthogonal_penalty([Q]).item() < 1e-10


def test_generator_ortho_parameters_skip_the_shared_embedding():
    G, _ = build_nets()
    ids = {id(p) for p in G.ortho_parameters()}
    assert id(G.shared.weight) not in ids and id(G.blocks[0].conv1.weight) in ids
    assert all(p.ndim >= 2 for p in G.ortho_parameters())


def test_class_label_changes_the_image_and_the_projection_uses_it():
    G, D = build_nets()
    G.eval()
    z = torch.randn(2, 15)
    a, b = G(z, onehot([0, 0])), G(z, onehot([1, 1]))
    assert a.shape == (2, 3, 16, 16) and a.abs().max() <= 1
    assert (a - b).abs().max() > 1e-3
    D.eval()
    img = torch.randn(2, 3, 16, 16)
    assert (D(img, onehot([0, 0])) - D(img, onehot([1, 1]))).abs().max() > 1e-4
    D.embed = None  # without the projection term the label no longer matters
    torch.testing.assert_close(D(img, onehot([0, 0])), D(img, onehot([1, 1])))


def test_hierarchical_latents_feed_every_block():
    G, _ = build_nets()
    G.eval()
    z, c = torch.randn(1, 15), onehot([0])
    base = G(z, c)
    for chunk in range(3):  # input layer, block 8, block 16
        z2 = z.clone()
        z2[:, chunk * 5:(chunk + 1) * 5] += 1
        assert (G(z2, c) - base).abs().max() > 1e-4, chunk
    with pytest.raises(ValueError, match="z_dim=16 must split into 3 equal chunks"):
        build_nets(z_dim=16)


def test_truncation_is_a_deterministic_map_into_the_interval():
    z = torch.randn(1000, 8, generator=torch.Generator().manual_seed(0))
    t = truncate_z(z, 0.5)
    assert t.abs().max() <= 0.5 and torch.equal(t, truncate_z(z, 0.5))
    order = z[:, 0].argsort()
    assert torch.all(t[order, 0].diff() >= 0)  # monotone: the seed's ordering is kept
    G, _ = build_nets()
    G.eval()
    assert (G(z[:2, :8].repeat(1, 2)[:, :15], onehot([0, 1]), truncation=0.5)
            - G(z[:2, :8].repeat(1, 2)[:, :15], onehot([0, 1]))).abs().max() > 1e-4


def test_batch_norm_matches_torch_and_averages_for_standing_stats():
    torch.manual_seed(0)
    x = torch.randn(8, 5, 4, 4) * 3 + 1
    ours, ref = BatchNorm(5), torch.nn.BatchNorm2d(5, affine=False)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
    ours.train()
    ours.reset_running_stats()
    ours.momentum = None
    batches = [torch.randn(4, 5, 2, 2) + i for i in range(3)]
    for b in batches:
        ours(b)
    torch.testing.assert_close(ours.running_mean, torch.stack([b.mean(dim=[0, 2, 3]) for b in batches]).mean(0))


@pytest.mark.parametrize("training", [True, False])
def test_conditional_batch_norm_with_relu_folded_is_the_textbook_order_to_the_gradients(training):
    # BN, then the conditional gain and bias, then ReLU, run as one affine map per sample and
    # channel (BatchNorm.fold) and one bias_act: the output and the gradients of x and of the
    # projections equal torch's batch_norm followed by the three ops, in float64, with the batch's
    # statistics (training) and with the running ones (eval).
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm(5, 7).double().train(training)
    if not training:
        cbn.bn.running_mean.uniform_(-1, 1), cbn.bn.running_var.uniform_(0.5, 2)
    x = (torch.randn(4, 5, 3, 3, dtype=torch.float64) * 3 + 1).requires_grad_(True)
    cond, r = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 5, 3, 3, dtype=torch.float64)

    def textbook():
        bn = cbn.bn
        y = F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), training=training, eps=bn.eps)
        return F.relu(y * (1 + cbn.gain(cond))[:, :, None, None] + cbn.bias(cond)[:, :, None, None])

    params = [x, cbn.gain.weight, cbn.bias.weight]
    want = textbook()
    want_grads = torch.autograd.grad((want * r).sum(), params)
    running = cbn.bn.running_mean.clone()
    got = cbn(x, cond, "relu")
    got_grads = torch.autograd.grad((got * r).sum(), params)
    assert (got == 0).any() and (got > 0).any()  # both sides of ReLU
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.equal(cbn.bn.running_mean, running) != training  # training updates them


def test_norm_none_makes_samples_independent_and_batch_norm_does_not():
    z, c = torch.randn(8, 15), onehot([0, 1, 2, 0, 1, 2, 0, 1])
    for norm, independent in (("none", True), ("batch", False)):
        G, _ = build_nets(norm=norm)
        G.train()
        same = torch.allclose(G(z, c)[:4], G(z[:4], c[:4]), atol=1e-5)
        assert same == independent, norm


def test_standing_stats_reestimate_the_running_statistics():
    G, _ = build_nets()
    bn = G.blocks[0].bn1.bn
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert standing_stats(G, batches=2, batch=4)
    assert not G.training and bn.momentum == 0.1 and bn.num_batches_tracked.item() == 2
    assert bn.running_mean.abs().max() > 0
    assert not standing_stats(get_family("progan").build_generator(
        get_family("progan").generator.Config(z_dim=8, channel_base=64, channel_max=8), 8, 1, 0), 1)


def test_deep_variant_and_paper_sizes():
    G, D = build_nets(deep=True, z_dim=16)
    G.eval(), D.eval()
    img = G(torch.randn(2, 16), onehot([0, 1]))
    assert img.shape == (2, 3, 16, 16)
    # The 128x128 preset has the paper's parameter counts (Brock et al. 2019: G 70.4M, D 88.0M).
    # Built on the meta device: shapes without memory or initialisation (33 s -> 1 s).
    p = PRESETS["res128"]
    with torch.device("meta"):
        G = SPEC.build_generator(build(SPEC.generator.Config, p["generator"]), 128, 3, 1000)
        D = SPEC.build_discriminator(build(SPEC.discriminator.Config, p["discriminator"]), 128, 3, 1000)
    assert sum(x.numel() for x in G.parameters()) / 1e6 == pytest.approx(70.4, abs=0.1)
    assert sum(x.numel() for x in D.parameters()) / 1e6 == pytest.approx(88.0, abs=0.1)


def test_ch_mult_length_is_checked_against_the_resolution():
    with pytest.raises(ValueError, match="ch_mult needs 3 entries for 16x16"):
        SPEC.build_generator(build(SPEC.generator.Config, {**GCFG, "ch_mult": [4, 4]}), 16, 3, 3)
    with pytest.raises(ValueError, match="ch_mult needs 3 entries"):
        SPEC.build_discriminator(build(SPEC.discriminator.Config, {**DCFG, "ch_mult": [4]}), 16, 3, 3)
