"""Progressive growing in both growable families (ProGAN; StyleGAN2, lod-style): the fade-in
blend is exact at alpha 0 and 1, and ``active_parameters`` is exactly what a forward and
backward at the stage touches (what DDP requires of the parameters it is given)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bigtrain.models import get_family
from bigtrain.models.common.growing import active_parameters, fade_reals
from bigtrain.ops import downsample2d, upsample2d

CFGS = {
    "progan": ({"z_dim": 16, "channel_base": 128, "channel_max": 16}, {"channel_base": 128, "channel_max": 16}),
    "stylegan2": ({"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 128, "channel_max": 16,
                   "use_noise": False}, {"channel_base": 128, "channel_max": 16}),
}


def build(family, res=32, c_dim=0, seed=0):
    spec = get_family(family)
    gcfg, dcfg = CFGS[family]
    torch.manual_seed(seed)
    G = spec.build_generator(spec.generator.Config(**gcfg), res, 3, c_dim)
    D = spec.build_discriminator(spec.discriminator.Config(**dcfg), res, 3, c_dim, growing=True)
    return G.eval(), D.eval()


def _z(n=4, seed=1):
    return torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))


def _perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))


@pytest.mark.parametrize("family", ["progan", "stylegan2"])
def test_generator_fade_in_endpoints(family):
    G, _ = build(family)
    z = _z()
    G.set_stage(8)
    low = G(z)
    assert low.shape == (4, 3, 8, 8)
    G.set_stage(16, alpha=0.0)
    at0 = G(z)
    assert at0.shape == (4, 3, 16, 16)
    # alpha 0: the lower resolution's output, upsampled the family's way (nearest / FIR)
    up = F.interpolate(low, scale_factor=2, mode="nearest") if family == "progan" else \
        upsample2d(low, G.synthesis.blocks["b4"].resample_filter)
    torch.testing.assert_close(at0, up, atol=1e-5, rtol=0)
    torch.testing.assert_close(G.upsample(low), up)
    G.set_stage(16, alpha=1.0)
    full = G(z)
    G.set_stage(16, alpha=0.3)
    torch.testing.assert_close(G(z), torch.lerp(at0, full, 0.3), atol=1e-5, rtol=0)
    assert not torch.allclose(full, at0, atol=1e-3)
    # alpha 1: the new block's output alone; ProGAN's old toRGB no longer matters
    if family == "progan":
        _perturb(G.torgb["b8"])
        G.set_stage(16, alpha=1.0)
        torch.testing.assert_close(G(z), full)


@pytest.mark.parametrize("family", ["progan", "stylegan2"])
def test_discriminator_fade_in_endpoints(family):
    _, D = build(family)
    img = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    low = F.avg_pool2d(img, 2) if family == "progan" else downsample2d(img, D.blocks["b16"].conv1.resample_filter)
    D.set_stage(8)
    d_low = D(low)
    D.set_stage(16, alpha=0.0)
    torch.testing.assert_close(D(img), d_low, atol=1e-5, rtol=0)  # the new block blended out
    D.set_stage(16, alpha=1.0)
    d_full = D(img)
    if family == "progan":
        _perturb(D.fromrgb["b8"])  # alpha 1: the old entry no longer matters
        torch.testing.assert_close(D(img), d_full)
    assert not torch.allclose(d_full, d_low, atol=1e-4)


@pytest.mark.parametrize("family", ["progan", "stylegan2"])
@pytest.mark.parametrize("stage", [(8, 1.0), (16, 0.0), (16, 0.5), (16, 1.0), (32, 0.25)])
def test_active_parameters_are_exactly_the_ones_that_get_gradients(family, stage):
    G, D = build(family, c_dim=3)
    res, alpha = stage
    c = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    for net in (G, D):
        net.set_stage(res, alpha)
        net.train()
    img = G(_z(), c)
    assert img.shape[-1] == res
    D(img, c).sum().backward()
    for net in (G, D):
        active = {id(p) for p in active_parameters(net)}
        touched = {id(p) for p in net.parameters() if p.grad is not None}
        names = {id(p): n for n, p in net.named_parameters()}
        assert touched == active, (sorted(names[i] for i in touched - active),
                                   sorted(names[i] for i in active - touched))
        assert 0 < len(active) < len(list(net.parameters())) or res == 32


def test_stylegan2_without_growing_has_one_fromrgb_and_all_params_active():
    spec = get_family("stylegan2")
    D = spec.build_discriminator(spec.discriminator.Config(**CFGS["stylegan2"][1]), 32, 3, 0)
    assert [r for r, b in D.blocks.items() if b.fromrgb is not None] == ["b32"]
    assert len(active_parameters(D)) == len(list(D.parameters()))
    with pytest.raises(ValueError, match="resolutions"):
        D.set_stage(16)


def test_stages_are_checked():
    G, D = build("progan")
    with pytest.raises(ValueError, match="nothing to fade in from"):
        G.set_stage(4, alpha=0.5)
    with pytest.raises(ValueError, match="resolutions"):
        D.set_stage(64)
    _, D2 = build("stylegan2")
    assert D2.stage_resolutions()[0] == 8  # its 4x4 epilogue has no image input


def test_fade_reals_matches_what_the_generator_can_make():
    img = torch.randn(2, 3, 16, 16)
    up = lambda x: F.interpolate(x, scale_factor=2, mode="nearest")  # noqa: E731
    torch.testing.assert_close(fade_reals(img, 0.0, up), up(F.avg_pool2d(img, 2)))
    assert fade_reals(img, 1.0, up) is img


def test_progan_conditioning_and_no_truncation():
    G, D = build("progan", c_dim=3)
    z = _z(2)
    c0, c1 = F.one_hot(torch.tensor([0, 0]), 3).float(), F.one_hot(torch.tensor([1, 1]), 3).float()
    assert not torch.allclose(G(z, c0), G(z, c1), atol=1e-4)
    img = G(z, c0)
    assert not torch.allclose(D(img, c0), D(img, c1), atol=1e-5)
    from bigtrain.models.sampling import generate_images
    with pytest.raises(ValueError, match="no truncation"):
        generate_images(G, [0], trunc=0.7, class_idx=0)


def test_progan_presets_follow_the_paper():
    from bigtrain.models.progan import PRESETS, ProGANGenerator
    G = ProGANGenerator(ProGANGenerator.Config(), 1024, 3)
    assert G.torgb["b1024"].weight.shape[1] == 16 and G.torgb["b16"].weight.shape[1] == 512
    grow = PRESETS["res256"]["grow"]
    assert grow["batch_size"] == {"4": 128, "8": 128, "16": 128, "32": 64, "64": 32, "128": 16, "256": 8}
    assert (grow["fade_kimg"], grow["stable_kimg"]) == (600, 600)
    assert PRESETS["res1024"]["grow"]["g_lr"] == {"1024": 0.0015}
