"""The progressive-growing schedule: a pure function of images seen, checked at its boundaries."""
from __future__ import annotations

import pytest

from bigtrain.config import ConfigError, build
from bigtrain.train.schedule import GrowConfig, check_grow, resolutions, stage_at

GROW = GrowConfig(start_res=4, fade_kimg=2, stable_kimg=1, batch_size={"4": 64, "16": 16}, g_lr={"16": 0.002})


def _at(nimg, grow=GROW, final=16):
    return stage_at(nimg, grow, final, batch_size=32, g_lr=0.001, d_lr=0.003)


@pytest.mark.parametrize("nimg, res, alpha", [
    (0, 4, 1.0), (999, 4, 1.0),            # stabilize at 4 for 1 kimg
    (1000, 8, 0.0), (1500, 8, 0.25), (2999, 8, 0.9995),  # fade 8 in over 2 kimg
    (3000, 8, 1.0), (3999, 8, 1.0),        # stabilize at 8
    (4000, 16, 0.0), (5000, 16, 0.5),      # fade 16 in
    (6000, 16, 1.0), (10 ** 9, 16, 1.0),   # the final resolution trains on
])
def test_resolution_and_alpha_at_phase_boundaries(nimg, res, alpha):
    s = _at(nimg)
    assert (s.resolution, s.alpha) == (res, pytest.approx(alpha))
    assert s.fading == (alpha < 1)


def test_batch_and_lr_per_resolution_with_fallbacks():
    assert (_at(0).batch_size, _at(0).g_lr, _at(0).d_lr) == (64, 0.001, 0.003)
    assert _at(1000).batch_size == 32  # 8 has no entry: train.batch_size
    assert (_at(4000).batch_size, _at(4000).g_lr, _at(4000).d_lr) == (16, 0.002, 0.003)


def test_without_growing_the_full_resolution_from_the_start():
    s = _at(0, GrowConfig())
    assert (s.resolution, s.alpha, s.batch_size) == (16, 1.0, 32)
    assert resolutions(GrowConfig(), 16) == [16] and resolutions(GROW, 32) == [4, 8, 16, 32]


def test_stable_zero_fades_straight_on():
    g = GrowConfig(start_res=8, fade_kimg=1, stable_kimg=0)
    assert (_at(0, g).resolution, _at(0, g).alpha) == (16, 0.0)  # nothing at 8 itself
    assert (_at(1000, g).resolution, _at(1000, g).alpha) == (16, 1.0)


@pytest.mark.parametrize("data, key", [
    ({"start_res": 6}, "grow.start_res"),
    ({"start_res": 2}, "grow.start_res"),
    ({"fade_kimg": 0}, "grow.fade_kimg"),
    ({"batch_size": {"5": 8}}, "grow.batch_size.5"),
    ({"batch_size": {"8": 0}}, "grow.batch_size.8"),
])
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(GrowConfig, data, sources="run.yaml", prefix="grow")


def test_schedule_checks_against_the_data_and_model():
    import types

    from bigtrain.train.config import LoopConfig
    net = types.SimpleNamespace(growable=True, stage_resolutions=lambda: [4, 8, 16])
    still = types.SimpleNamespace(growable=False)
    train = LoopConfig(batch_size=8)

    def check(grow, G=net, D=net, world=1, train=train):
        check_grow(grow, train, 16, G, D, "progan", world, "run.yaml")

    with pytest.raises(ConfigError, match="start_res.*below the data resolution 16"):
        check(GrowConfig(start_res=16))
    with pytest.raises(ConfigError, match="does not support progressive growing"):
        check(GrowConfig(start_res=4), D=still)
    with pytest.raises(ConfigError, match=r"grow\.batch_size\.32.*outside the schedule 4\.\.16"):
        check(GrowConfig(start_res=4, batch_size={"32": 8}))
    with pytest.raises(ValueError, match=r"grow\.batch_size\.8=7 must equal world_size=2"):
        check(GrowConfig(start_res=4, batch_size={"8": 7}), world=2)
    check(GrowConfig(), G=still, D=still)  # off: anything goes
