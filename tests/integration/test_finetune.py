"""Fine-tuning (train.init_from, train.freeze_d) and ADA (augment.kind: ada) in real tiny runs."""
import json
import os
import shutil

import pytest
import torch

from bigtrain.checkpoint.schema import Checkpoint
from bigtrain.config import ConfigError, load_config
from bigtrain.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from bigtrain.train.config import TrainConfig
from bigtrain.train.loop import Trainer
from tests.conftest import tiny_config, write_config
from tests.nvlabs_layout import write_nvlabs_pickle

ADA = {"kind": "ada", "speed_kimg": 0.2, "interval": 1, "p": 0.5}  # from 0.5: p moves whichever way r_t says


def _trainer(cfg_dict, tmp_path, name, resume=None):
    path = write_config(tmp_path / f"{name}.yaml", cfg_dict)
    return Trainer(load_config(path, [], TrainConfig), resume=resume, config_source=path)


def _ada_config(run_dir, **train):
    return tiny_config(run_dir, loss={"augment": []}, augment=dict(ADA), train={"total_kimg": 0.064, **train})


def test_ada_moves_p_logs_it_and_resume_continues_it_exactly(tmp_path):
    straight = _trainer(_ada_config(tmp_path / "straight"), tmp_path, "straight")
    end = straight.run()
    rows = [json.loads(line) for line in open(tmp_path / "straight" / "stats.jsonl")]
    ps = [r["Progress/augment_p"] for r in rows]
    assert all("Progress/augment_rt" in r for r in rows) and len(set(ps)) > 1  # p moved
    step = 8 * 1 / (0.2 * 1000)  # batch * interval / (speed_kimg * 1000)
    assert all(abs(round((v - 0.5) / step) * step - (v - 0.5)) < 1e-6 for v in ps)  # in whole steps from 0.5
    ckpt = Checkpoint.read(end)
    assert float(ckpt.loss["augment_pipe.p"]) == pytest.approx(ps[-1])
    # Half, then resumed: the same p and the same weights at the end.
    half = _trainer(_ada_config(tmp_path / "split", total_kimg=0.032), tmp_path, "half")
    mid = half.run()
    shutil.copy(mid, tmp_path / "mid.pt")
    resumed = _trainer(_ada_config(tmp_path / "split"), tmp_path, "resumed", resume=mid)
    end2 = Checkpoint.read(resumed.run())
    assert torch.equal(end2.loss["augment_pipe.p"], ckpt.loss["augment_pipe.p"])
    assert torch.equal(end2.loss["ada.acc"], ckpt.loss["ada.acc"])
    for k, v in ckpt.G_ema.items():
        assert torch.equal(end2.G_ema[k], v), k
    # A checkpoint written before the discriminator's mapping keys existed, resumed with ADA switched
    # off: the missing keys read as their defaults, the ADA state is dropped.
    old = Checkpoint.read(str(tmp_path / "mid.pt"))
    for k in ("mapping_layers", "mapping_lr_mul"):
        del old.config["discriminator"][k]
    old.write(str(tmp_path / "mid.pt"))
    plain = tiny_config(tmp_path / "plain", train={"total_kimg": 0.048})
    assert _trainer(plain, tmp_path, "plain", resume=str(tmp_path / "mid.pt")).run()
    # A run dir as train.init_from: its newest checkpoint (G, D and G_ema), kimg 0, D's top block frozen.
    ft = _trainer(tiny_config(tmp_path / "ft", train={"init_from": str(tmp_path / "straight"), "freeze_d": 1}),
                  tmp_path, "ft")
    assert ft.started_from["path"] == os.path.abspath(end)
    assert ft.started_from["nets"] == ["G_ema", "G", "D"] and ft.progress.nimg == 0
    assert all(torch.equal(ft.G_ema.state_dict()[k], v) for k, v in ckpt.G_ema.items())


def _pretrained(tmp_path):
    """An NVlabs-layout pickle of networks shaped like tiny_config's (1 channel, 16x16)."""
    cfg = load_config(write_config(tmp_path / "shape.yaml", tiny_config(tmp_path / "x")), [], TrainConfig)
    torch.manual_seed(5)
    G = StyleGAN2Generator(cfg.generator, 16, 1, 0)
    D = StyleGAN2Discriminator(cfg.discriminator, 16, 1, 0)
    pkl = tmp_path / "pretrained.pkl"
    write_nvlabs_pickle(pkl, G, D)
    return pkl, G, D


def test_init_from_an_nvlabs_pickle_with_freeze_d(tmp_path):
    pkl, G, D = _pretrained(tmp_path)
    run = tmp_path / "ft"
    cfg = tiny_config(run, train={"total_kimg": 0.016, "init_from": str(pkl), "freeze_d": 1})
    trainer = _trainer(cfg, tmp_path, "ft")
    assert trainer.progress.nimg == 0
    for k, v in G.state_dict().items():  # started from the pickle's G_ema (= its G here)
        assert torch.equal(trainer.G_ema.state_dict()[k], v), k
    end = Checkpoint.read(trainer.run())
    record = json.loads((run / "init_from.json").read_text())
    assert record["kind"] == "nvlabs-pickle" and record["nets"] == ["G_ema", "G", "D"]
    d_after = end.strategy["D"]["module"]
    frozen = [k for k in d_after if k.startswith("blocks.b16.") and "resample_filter" not in k]
    trained = [k for k in d_after if k.startswith("blocks.b8.conv0.weight")]
    assert frozen and all(torch.equal(d_after[k], D.state_dict()[k]) for k in frozen)
    assert not torch.equal(d_after[trained[0]], D.state_dict()[trained[0]])
    # A run whose config describes other networks: every differing setting named, as overrides.
    bad = tiny_config(tmp_path / "bad", train={"init_from": str(pkl)}, generator={"channel_max": 32})
    with pytest.raises(ConfigError, match=r"generator\.channel_max=16 \(the run's config has 32\)"):
        _trainer(bad, tmp_path, "bad")
    too_many = tiny_config(tmp_path / "bad", train={"freeze_d": 3, "init_from": str(pkl)})
    with pytest.raises(ConfigError, match=r"train.freeze_d.*3 blocks, but D has 2"):
        _trainer(too_many, tmp_path, "bad2")
    fresh_d = tiny_config(tmp_path / "bad", train={"freeze_d": 1})  # nothing to keep: D is random
    with pytest.raises(ConfigError, match=r"train.freeze_d.*D starts from its initialisation: set train.init_from"):
        _trainer(fresh_d, tmp_path, "bad3")
