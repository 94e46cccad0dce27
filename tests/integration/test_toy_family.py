"""The model-family contract (bigtrain/models/base.py): a family that exists only in this file,
registered here, goes through train, resume, generate, export (safetensors and ONNX, checked against
the checkpoint) and eval with nothing outside this file knowing it."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import tiny_config, write_config
from torch import nn

from bigtrain.config import require
from bigtrain.models.base import Discriminator, Generator
from bigtrain.models.registry import FamilySpec, register


class ToyGenerator(Generator):
    """z (and a label) -> a linear layer -> tanh images: the least a generator can be. Its
    truncation scales z by a factor (1 = off), to show a family bringing its own meaning."""
    truncation_arg = "scale"
    truncation_off = 1.0
    truncation_check = 0.5

    @dataclasses.dataclass
    class Config:
        z_dim: int = 8  # Latent dimensionality.

        def __post_init__(self):
            require(self.z_dim >= 1, "z_dim", self.z_dim, "must be >= 1")

    def __init__(self, cfg: "ToyGenerator.Config", img_resolution: int, img_channels: int, c_dim: int = 0):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution, self.img_channels = cfg.z_dim, c_dim, img_resolution, img_channels
        self.fc = nn.Linear(cfg.z_dim + c_dim, img_channels * img_resolution ** 2)

    def forward(self, z, c=None, scale: float = 1.0, update_emas: bool = False, noise_mode: str = "random"):
        return self.traceable(z, c, torch.tensor(scale))

    def traceable(self, z, c, trunc):
        x = z * trunc if trunc is not None else z
        if self.c_dim:
            x = torch.cat([x, c], dim=1)
        return torch.tanh(self.fc(x)).view(-1, self.img_channels, self.img_resolution, self.img_resolution)


class ToyDiscriminator(Discriminator):
    @dataclasses.dataclass
    class Config:
        hidden: int = 16  # Width of the one hidden layer.

    def __init__(self, cfg: "ToyDiscriminator.Config", img_resolution: int, img_channels: int, c_dim: int = 0):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(img_channels * img_resolution ** 2, cfg.hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(cfg.hidden, 1))

    def forward(self, img, c=None):
        return self.net(img)


@pytest.fixture
def toy_family():
    """Registered for the test only: other tests in this process (the config reference) see the
    built-in families alone."""
    from bigtrain.models import registry
    register(FamilySpec(name="toy", generator=ToyGenerator, discriminator=ToyDiscriminator,
                        defaults={"loss": {"pl_weight": 0.0, "style_mixing_prob": 0.0}}))
    yield
    registry._FAMILIES.pop("toy")


def _config(run_dir, total_kimg):
    cfg = tiny_config(run_dir, model="toy", train={"total_kimg": total_kimg})
    cfg["generator"], cfg["discriminator"] = {"z_dim": 8}, {"hidden": 16}
    cfg["loss"] = {"r1_gamma": 1.0, "r1_interval": 2, "augment": ["translation"]}
    return cfg


@pytest.mark.slow  # loads InceptionV3 for eval
def test_a_family_defined_in_the_tests_runs_everywhere(tmp_path, toy_family):
    from bigtrain.checkpoint.schema import Checkpoint
    from bigtrain.cli import main
    from bigtrain.config import load_config
    from bigtrain.train.config import TrainConfig
    from bigtrain.train.loop import Trainer

    def train(name, total, resume=None):
        path = write_config(tmp_path / f"{name}.yaml", _config(tmp_path / name, total))
        return Trainer(load_config(path, [], TrainConfig), resume=resume, config_source=path).run()

    straight = train("straight", 0.032)
    mid = train("split", 0.016)
    resumed = train("split", 0.032, resume=mid)
    a, b = Checkpoint.read(straight), Checkpoint.read(resumed)
    assert a.nimg == b.nimg == 32 and all(torch.equal(a.G_ema[k], b.G_ema[k]) for k in a.G_ema)  # exact resume

    run = str(tmp_path / "straight")
    assert main(["generate", run, "--seeds", "0-3", "--trunc", "0.5", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 0
    assert main(["export", run, "--out", str(tmp_path / "export"), "--format", "safetensors,onnx"]) == 0
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["family"] == "toy" and config["truncation"]["arg"] == "scale"
    checks = json.loads((tmp_path / "export" / "checks.json").read_text())
    assert checks["trunc"] == [None, 0.5]  # checked at the family's own truncation_check too
    assert checks["onnx"]["max_abs_err"] <= 1e-3 and checks["safetensors"]["max_abs_err"] <= 1e-3
    assert main(["generate", str(tmp_path / "export"), "--seeds", "0-3", "--out", str(tmp_path / "e.png")]) == 0
    assert main(["eval", run, "--data", tiny_config(tmp_path)["data"]["source"], "--metrics", "fid8",
                 "--batch", "8", "--no-cache", "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["fid8"] > 0



@pytest.mark.parametrize("key,value,message", [
    ("pl_weight", 2.0, "path-length regularization needs a style-based generator"),
    ("style_mixing_prob", 0.5, "style mixing needs a style-based generator"),
    ("ortho_weight", 1e-4, "orthogonal regularization is defined for BigGAN's generator"),
])
def test_a_capability_the_family_lacks_is_a_config_error(tmp_path, toy_family, key, value, message):
    from bigtrain.config import ConfigError, load_config
    from bigtrain.train.config import TrainConfig
    from bigtrain.train.loop import Trainer

    cfg = _config(tmp_path / "run", 0.016)
    cfg["loss"][key] = value
    path = write_config(tmp_path / "bad.yaml", cfg)
    with pytest.raises(ConfigError, match=f"key 'loss.{key}': {message}"):
        Trainer(load_config(path, [], TrainConfig), config_source=path)


def test_growing_a_family_that_cannot_grow_is_a_config_error(tmp_path, toy_family):
    from bigtrain.config import ConfigError, load_config
    from bigtrain.train.config import TrainConfig
    from bigtrain.train.loop import Trainer

    cfg = _config(tmp_path / "run", 0.016)
    cfg["grow"] = {"start_res": 8}
    path = write_config(tmp_path / "grow.yaml", cfg)
    with pytest.raises(ConfigError, match="key 'grow.start_res': model family toy does not support progressive growing"):
        Trainer(load_config(path, [], TrainConfig), config_source=path)


def test_per_resolution_precision_on_a_family_without_such_blocks_is_a_config_error(tmp_path, toy_family):
    # Without the error, reduced_precision_res would leave every block of such a family in float32.
    from bigtrain.config import ConfigError, load_config
    from bigtrain.train.config import TrainConfig
    from bigtrain.train.loop import Trainer

    cfg = _config(tmp_path / "run", 0.016)
    cfg["train"].update(precision="bf16", reduced_precision_res=1)
    path = write_config(tmp_path / "prec.yaml", cfg)
    with pytest.raises(ConfigError, match="key 'train.reduced_precision_res': toy's generator has no blocks"):
        Trainer(load_config(path, [], TrainConfig), config_source=path)
