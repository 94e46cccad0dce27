"""StyleGAN2 G and D on tiny configs: shapes, conditioning, truncation, mixing, presets."""
import math

import pytest
import torch

from bigtrain.config import load_config
from bigtrain.models import family_names, get_family
from bigtrain.models.common.layers import EqualLinear, MinibatchStd
from bigtrain.models.stylegan2 import PRESETS, StyleGAN2Discriminator, StyleGAN2Generator
from bigtrain.train.config import TrainConfig

GCFG = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16)
DCFG = dict(channel_base=128, channel_max=16)


def make_G(res=16, channels=3, c_dim=0, seed=0, noise_strength=0.3):
    torch.manual_seed(seed)
    G = StyleGAN2Generator(StyleGAN2Generator.Config(**GCFG), res, channels, c_dim)
    # noise strengths start at 0; make noise visible so noise_mode matters in the tests
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(noise_strength)
    return G.eval()


def make_D(res=16, channels=3, c_dim=0, seed=0, **kw):
    torch.manual_seed(seed)
    return StyleGAN2Discriminator(StyleGAN2Discriminator.Config(**{**DCFG, **kw}), res, channels, c_dim).eval()


def z(n, seed=0, dim=16):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_stylegan2_is_registered():
    assert "stylegan2" in family_names()
    spec = get_family("stylegan2")
    assert spec.generator is StyleGAN2Generator and spec.discriminator is StyleGAN2Discriminator


@pytest.mark.parametrize("res", [16, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes_and_num_ws(res, channels):
    G, D = make_G(res, channels), make_D(res, channels)
    with torch.no_grad():
        img, ws = G(z(2), None, return_ws=True)
        logits = D(img)
    assert img.shape == (2, channels, res, res)
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    assert ws.shape == (2, G.num_ws, 16)
    assert logits.shape == (2, 1)
    assert torch.isfinite(img).all() and torch.isfinite(logits).all()


def test_different_z_give_different_images_and_same_z_is_reproducible():
    G = make_G()
    with torch.no_grad():
        a = G(z(2, seed=0), None, noise_mode="const")
        b = G(z(2, seed=0), None, noise_mode="const")
        c = G(z(2, seed=1), None, noise_mode="const")
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])


def test_noise_modes():
    G = make_G()
    zz = z(2)
    with torch.no_grad():
        r1, r2 = G(zz, None, noise_mode="random"), G(zz, None, noise_mode="random")
        n1, n2 = G(zz, None, noise_mode="none"), G(zz, None, noise_mode="none")
    assert not torch.allclose(r1, r2)
    assert torch.equal(n1, n2)


def test_class_label_changes_conditional_generator_and_discriminator():
    G = make_G(c_dim=4)
    D = make_D(c_dim=4)
    zz = z(2)
    c0 = torch.nn.functional.one_hot(torch.tensor([0, 0]), 4).float()
    c1 = torch.nn.functional.one_hot(torch.tensor([3, 3]), 4).float()
    with torch.no_grad():
        i0 = G(zz, c0, noise_mode="const")
        i0b = G(zz, c0, noise_mode="const")
        i1 = G(zz, c1, noise_mode="const")
        d0, d1 = D(i0, c0), D(i0, c1)
    assert torch.equal(i0, i0b)
    assert (i0 - i1).abs().max() > 1e-3
    assert d0.shape == (2, 1)
    assert (d0 - d1).abs().max() > 1e-5


def test_truncation_psi_zero_collapses_to_w_avg():
    G = make_G()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(16))
        a = G(z(3, seed=0), None, truncation_psi=0.0, noise_mode="const")
        b = G(z(3, seed=1), None, truncation_psi=0.0, noise_mode="const")
        free = G(z(3, seed=0), None, noise_mode="const")
        _, ws = G(z(3, seed=0), None, truncation_psi=0.0, return_ws=True)
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(a[0], a[2], atol=1e-6)
    assert not torch.allclose(a, free, atol=1e-3)
    assert torch.allclose(ws, G.mapping.w_avg.expand_as(ws))


def test_truncation_cutoff_only_touches_early_layers():
    G = make_G()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(16))
        _, ws = G(z(2), None, truncation_psi=0.0, truncation_cutoff=2, return_ws=True)
        _, ws_free = G(z(2), None, return_ws=True)
    assert torch.allclose(ws[:, :2], G.mapping.w_avg.expand(2, 2, 16))
    assert torch.allclose(ws[:, 2:], ws_free[:, 2:])


def test_w_avg_updates_only_with_update_emas():
    G = make_G()
    before = G.mapping.w_avg.clone()
    with torch.no_grad():
        G(z(4), None)
        G(z(4), None, update_emas=False)
    assert torch.equal(G.mapping.w_avg, before)
    with torch.no_grad():
        _, ws = G(z(4), None, update_emas=True, return_ws=True)
    after = G.mapping.w_avg
    assert not torch.equal(after, before)
    # moved by (1 - beta) toward this batch's mean w
    beta = G.cfg.w_avg_beta
    want = beta * before + (1 - beta) * ws[:, 0].mean(dim=0)
    assert torch.allclose(after, want, atol=1e-6)


def test_style_mixing():
    G = make_G(res=32)
    L = G.num_ws
    torch.manual_seed(0)
    with torch.no_grad():
        _, plain = G(z(3), None, style_mixing_prob=0.0, return_ws=True)
    assert torch.equal(plain, plain[:, :1].expand_as(plain))

    for seed in range(5):
        torch.manual_seed(seed)
        with torch.no_grad():
            _, mixed = G(z(3), None, style_mixing_prob=1.0, return_ws=True)
        assert not torch.allclose(mixed[:, 0], mixed[:, -1])
        # one cutoff: layers before it carry the first w, layers from it the second
        same_as_first = [torch.equal(mixed[:, i], mixed[:, 0]) for i in range(L)]
        k = same_as_first.index(False)
        assert 1 <= k < L
        assert all(same_as_first[:k])
        assert all(torch.equal(mixed[:, i], mixed[:, -1]) for i in range(k, L))
        assert torch.equal(mixed[:, 0], plain[:, 0])


def test_fused_and_unfused_modconv_agree():
    G = make_G(res=32)
    zz = z(3)
    with torch.no_grad():
        a = G(zz, None, noise_mode="const", fused_modconv=True)
        b = G(zz, None, noise_mode="const", fused_modconv=False)
    assert torch.allclose(a, b, atol=1e-5)


def test_gradients_reach_every_generator_parameter():
    G = make_G().train()
    img = G(z(2), None)
    img.square().sum().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None]
    assert not missing


# ---------------------------------------------------------------- minibatch stddev

def test_minibatch_std_of_identical_images_is_zero():
    x = torch.randn(1, 8, 4, 4).repeat(4, 1, 1, 1)
    y = MinibatchStd(group_size=4, num_channels=1)(x)
    assert y.shape == (4, 9, 4, 4)
    assert torch.equal(y[:, :8], x)
    assert y[:, 8].abs().max() < 1e-3


def test_minibatch_std_matches_population_std():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 3, 3, generator=g, dtype=torch.float64)
    y = MinibatchStd(group_size=4, num_channels=1)(x)
    want = x.std(dim=0, unbiased=False).mean()
    assert torch.allclose(y[:, 6], want.expand(4, 3, 3), atol=1e-6)


@pytest.mark.parametrize("n", [3, 5, 6])
def test_minibatch_std_batch_not_divisible_by_group(n):
    x = torch.randn(n, 8, 4, 4)
    y = MinibatchStd(group_size=4, num_channels=1)(x)
    assert y.shape == (n, 9, 4, 4)
    assert torch.isfinite(y).all()
    # every sample's stddev map is constant over space
    assert torch.allclose(y[:, 8], y[:, 8, :1, :1].expand(n, 4, 4))
    D = make_D()
    with torch.no_grad():
        assert D(torch.rand(n, 3, 16, 16) * 2 - 1).shape == (n, 1)


def test_discriminator_sees_lack_of_variety():
    D = make_D()
    varied = torch.rand(4, 3, 16, 16) * 2 - 1
    same = varied[:1].repeat(4, 1, 1, 1)
    with torch.no_grad():
        a = D(same)[0]
        mixed = torch.cat([same[:1], varied[1:]])
        b = D(mixed)[0]
    assert not torch.allclose(a, b)  # sample 0 is the same image; only its batch-mates changed


# ---------------------------------------------------------------- presets and EqualLinear

def test_every_preset_loads_and_builds(tmp_path):
    counts = []
    spec = get_family("stylegan2")
    assert list(PRESETS)  # at least one
    for name in PRESETS:
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"preset: {name}\n")
        cfg = load_config(str(path), [], TrainConfig)
        res = cfg.data.resolution
        assert res == PRESETS[name]["data"]["resolution"]
        G = spec.build_generator(cfg.generator, res, 3, 0)
        D = spec.build_discriminator(cfg.discriminator, res, 3, 0)
        assert G.img_resolution == res and G.synthesis.block_resolutions[-1] == res
        assert G.num_ws == 2 * int(math.log2(res)) - 2
        assert D.block_resolutions[0] == res
        assert D.blocks[f"b{res}"].fromrgb is not None
        counts.append((res, sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters())))
        del G, D
    counts.sort()
    for (r0, g0, d0), (r1, g1, d1) in zip(counts, counts[1:]):
        assert r1 > r0 and g1 > g0 and d1 > d0, counts


def test_preset_r1_gamma_and_batch_reach_config(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("preset: res1024\n")
    cfg = load_config(str(path), [], TrainConfig)
    assert cfg.loss.r1_gamma == PRESETS["res1024"]["loss"]["r1_gamma"]
    assert cfg.train.batch_size == PRESETS["res1024"]["train"]["batch_size"]
    assert cfg.generator.channel_base == cfg.discriminator.channel_base == 32768


@pytest.mark.parametrize("lr_mul", [1.0, 0.01])
def test_equal_linear_effective_weight_std(lr_mul):
    torch.manual_seed(0)
    fan_in = 400
    layer = EqualLinear(fan_in, 300, lr_multiplier=lr_mul)
    eff = (layer.weight * layer.weight_gain).detach()
    assert eff.std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.05)
    # so unit-variance inputs give unit-variance outputs, whatever lr_mul
    x = torch.randn(512, fan_in)
    with torch.no_grad():
        y = layer(x)
    assert y.std().item() == pytest.approx(1.0, rel=0.1)
    # and the stored parameter is N(0, 1/lr_mul^2) so Adam steps scale by lr_mul
    assert layer.weight.std().item() == pytest.approx(1 / lr_mul, rel=0.05)


def test_use_noise_false_removes_noise_inputs():
    cfg = StyleGAN2Generator.Config(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16,
                                    use_noise=False)
    torch.manual_seed(0)
    G = StyleGAN2Generator(cfg, 16, 1).eval()
    assert not any("noise" in n for n, _ in G.named_parameters())
    assert not any("noise" in n for n, _ in G.named_buffers())
    zz = z(3)
    with torch.no_grad():
        a = G(zz, None, noise_mode="random")
        b = G(zz, None, noise_mode="random")
    assert torch.equal(a, b), "with no noise inputs the output is a function of z alone"
