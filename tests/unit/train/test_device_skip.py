"""A step with a non-finite loss is skipped on the device (fused Adam, no host sync per phase) and
counted at the next tick. On a GPU that is the default; here the strategy is told it may, and
torch's fused Adam runs on the CPU, so the real path runs: the skipped steps leave the weights,
the moments and the step count exactly as the host-checked path leaves them."""
from __future__ import annotations

import pytest
import torch
from conftest import biggan_config, tiny_config, write_config

from bigtrain.config import load_config
from bigtrain.distributed.strategy.base import Strategy
from bigtrain.train.config import TrainConfig
from bigtrain.train.loop import Trainer, TrainingDiverged
from bigtrain.train.observe import TickStats


def _trainer(tmp_path, name, on_device: bool, monkeypatch, model="stylegan2", **train):
    monkeypatch.setattr(Strategy, "skips_on_device", property(lambda self: True))
    if model == "biggan":
        cfg = biggan_config(tmp_path / name, skip_nonfinite_on_device=on_device, **train)
    else:
        cfg = tiny_config(tmp_path / name, train={"skip_nonfinite_on_device": on_device, **train})
    cfg["loss"]["augment"] = []  # nothing drawn from the global RNG between the two runs
    path = write_config(tmp_path / f"{name}.yaml", cfg)
    t = Trainer(load_config(path, [], TrainConfig), config_source=path)
    assert t.fused_optimizer and t.skip_on_device["D"] is on_device
    return t


def _poison(trainer, bad: set[tuple[str, int]]):
    """Make the total loss NaN in the named (phase, step)s."""
    real = trainer.loss.compute

    def compute(phase, nets, batch, progress):
        out = real(phase, nets, batch, progress)
        if (phase.name, progress.step) in bad:
            out.total = out.total * float("nan")
        return out
    trainer.loss.compute = compute


def test_device_skip_matches_the_host_check_bit_for_bit(tmp_path, monkeypatch):
    bad = {("Dmain", 1), ("Gmain", 2), ("Dmain", 2), ("Dreg", 4)}
    runs = {}
    for on_device in (True, False):
        t = _trainer(tmp_path, f"dev{on_device}", on_device, monkeypatch)
        _poison(t, bad)
        stats = TickStats()
        d_before = {k: v.clone() for k, v in t.wrapped["D"].raw.state_dict().items()}
        t.train_step(stats)  # step 0: finite
        t.train_step(stats)  # step 1: Dmain NaN -> D untouched by it
        if on_device:
            assert t.progress.nonfinite_total == 0  # not counted before the tick ...
            assert len(t._unsettled) == 2
        for _ in range(4):
            t.train_step(stats)
        t.settle_nonfinite()  # ... the tick counts them, in order
        runs[on_device] = t
        assert t.progress.nonfinite_total == 3  # steps 1, 2 and 4 skipped something
        assert d_before.keys() == t.wrapped["D"].raw.state_dict().keys()
    dev, host = runs[True], runs[False]
    for net in ("G", "D"):
        for a, b in zip(dev.wrapped[net].raw.parameters(), host.wrapped[net].raw.parameters()):
            assert torch.equal(a, b)
        sa, sb = dev.wrapped[net].optimizer.state_dict(), host.wrapped[net].optimizer.state_dict()
        for pa, pb in zip(sa["state"].values(), sb["state"].values()):
            assert all(torch.equal(pa[k], pb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert dev.progress == host.progress


def test_a_skipped_step_leaves_weights_moments_and_step_count(tmp_path, monkeypatch):
    t = _trainer(tmp_path, "one", True, monkeypatch)
    t.train_step(TickStats())
    _poison(t, {("Dmain", 1)})
    opt = t.wrapped["D"].optimizer
    before = [p.clone() for p in t.wrapped["D"].raw.parameters()]
    steps = [opt.state[p]["step"].clone() for p in t.wrapped["D"].raw.parameters() if p in opt.state]
    t.train_step(TickStats())  # step 1: Dmain NaN; the lazy Dreg (interval 2) does not run at odd steps
    assert all(torch.equal(a, b) for a, b in zip(before, t.wrapped["D"].raw.parameters()))
    assert [opt.state[p]["step"] for p in t.wrapped["D"].raw.parameters() if p in opt.state] == steps
    t.settle_nonfinite()
    assert (t.progress.nonfinite_total, t.progress.nonfinite_run) == (1, 1)


def test_divergence_is_reported_at_the_tick(tmp_path, monkeypatch, capsys):
    t = _trainer(tmp_path, "div", True, monkeypatch, max_nonfinite_steps=3, total_kimg=0.032)
    _poison(t, {(name, step) for name in ("Gmain", "Greg", "Dmain", "Dreg") for step in range(1, 100)})
    with pytest.raises(TrainingDiverged, match="3 iterations in a row had a non-finite loss"):
        t.run()
    # Steps 1 on are NaN: 1 in a row at the first tick (2 iterations of 8), 3 at the second.
    assert t.progress.nimg == 32
    assert "step skipped (1 in a row, 1 in total)" in capsys.readouterr().out


def test_spectral_norm_hears_of_the_steps_taken_on_the_device_bit_for_bit(tmp_path, monkeypatch):
    # BigGAN's spectrally normalised layers refine u after each step taken (a step hook): on the device
    # they get the step's flag instead of a host check per phase, and end exactly where the host's do.
    bad = {("Dmain", 1), ("Gmain", 2), ("Dmain", 3)}
    runs = {}
    for on_device in (True, False):
        t = _trainer(tmp_path, f"bg{on_device}", on_device, monkeypatch, model="biggan")
        assert t.skip_on_device == {"G": on_device, "D": on_device} and all(t.step_hooks.values())
        _poison(t, bad)
        stats = TickStats()
        for _ in range(5):
            t.train_step(stats)
        t.settle_nonfinite()
        runs[on_device] = t
        assert t.progress.nonfinite_total == 3
    dev, host = runs[True], runs[False]
    for net in ("G", "D"):
        sa, sb = dev.wrapped[net].raw.state_dict(), host.wrapped[net].raw.state_dict()
        assert any(k.endswith("sn_u") for k in sa)
        for k in sa:  # weights and every buffer: u, sigma, the refine flag, batch-norm statistics
            assert torch.equal(sa[k], sb[k]), (net, k)
