"""An iteration makes the host wait for the device nowhere but where it must (issue 20: a wait
drains the GPU's queue; session 8's per-phase loss check alone cost 11% on an H200). Seen on the CPU
through what would wait on a GPU (tests/host_waits.py), on the path a GPU takes: non-finite steps
skipped by fused Adam on the device (the strategy is told it may, as in test_device_skip.py)."""
from __future__ import annotations

import pytest
from conftest import biggan_config, tiny_config, write_config
from host_waits import HostWaits

from bigtrain.config import load_config
from bigtrain.distributed.strategy.base import Strategy
from bigtrain.train.config import TrainConfig
from bigtrain.train.loop import Trainer
from bigtrain.train.observe import TickStats


@pytest.mark.parametrize("case", ["stylegan2-diffaugment", "stylegan2-ada", "progan", "biggan"])
def test_iterations_of_every_phase_read_nothing_back(tmp_path, monkeypatch, case):
    monkeypatch.setattr(Strategy, "skips_on_device", property(lambda self: True))
    aug = ({"kind": "ada", "pipe": "bgc", "p": 0.3, "interval": 2, "speed_kimg": 0.1} if case == "stylegan2-ada"
           else {"kind": "diffaugment", "policy": ["translation", "cutout"]})
    cfg = tiny_config(tmp_path / "run", augment=aug)
    cfg["loss"]["augment"] = []
    if case == "progan":  # its loss: WGAN with the gradient penalty and drift in every D step
        cfg.update(model="progan", generator={"z_dim": 16, "channel_base": 128, "channel_max": 16})
        cfg["loss"] = {"type": "wgan", "gp_weight": 10.0, "drift": 0.001, "r1_gamma": 0.0, "pl_weight": 0.0,
                       "style_mixing_prob": 0.0}
    if case == "biggan":  # spectral norm's step hooks; class labels
        cfg = biggan_config(tmp_path / "run")
    path = write_config(tmp_path / "run.yaml", cfg)
    t = Trainer(load_config(path, [], TrainConfig), config_source=path)
    assert t.skip_on_device == {"G": True, "D": True}
    stats = TickStats()
    t.train_step(stats)  # step 0 (the pipe reads its p once; first-use set-up)
    t.train_step(stats)  # step 1 (ADA adjusts p after it)
    # ADA's adjustment of p, every `interval` iterations, reads D's sign sums back: it must. one_hot
    # checks its labels' range on the host only for CPU tensors (on a GPU its scatter asserts).
    with HostWaits(allowed=("_host_tensor", "adjust", "one_hot")) as w:
        for _ in range(4):  # steps 2-5: StyleGAN2's Greg and Dreg twice each; ADA adjusts after 3 and 5
            t.train_step(stats)
    assert {p.name for p in t.phases} == ({"Gmain", "Dboth"} if case == "progan" else {"Gmain", "Dmain"}
                                          if case == "biggan" else {"Gmain", "Greg", "Dmain", "Dreg"})
    # No tensor is made from Python data but through pinned memory, and no value is read (with ADA,
    # the pipe takes the p its adjustment wrote, after steps 3 and 5, without reading it back).
    assert (w.made, w.reads) == ([], [])
    if case == "stylegan2-ada":
        assert t.loss.augment_pipe._p_value() == t.augment_stats["augment_p"] == float(t.loss.augment_pipe.p)
