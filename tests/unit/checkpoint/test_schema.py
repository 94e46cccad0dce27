"""The checkpoint schema (bigtrain/checkpoint/schema.py): what it writes reads back the same, and
a checkpoint whose fields are wrong (sealed with a matching digest, as a hostile file would be) is
refused naming the field, before anything is built from it."""
from __future__ import annotations

import pytest
import torch

from bigtrain.checkpoint.schema import Checkpoint
from bigtrain.checkpoint.state import CheckpointManager, DamagedCheckpoint, save_atomic, seal


def train_checkpoint(nimg: int) -> Checkpoint:
    """A schema-valid training checkpoint of a 4096-weight G_ema (no real network)."""
    return Checkpoint(kind="train", config={"model": "stylegan2"},
                      model_info={"family": "stylegan2", "resolution": 16, "channels": 1, "c_dim": 0},
                      G_ema={"w": torch.randn(4096, generator=torch.Generator().manual_seed(nimg))},
                      progress={"nimg": nimg, "step": nimg // 8},
                      stage={"resolution": 16, "alpha": 1.0, "batch_size": 8, "g_lr": 0.002, "d_lr": 0.002},
                      strategy={"G": {}, "D": {}}, loss={}, rng=[{}], data={"cursor": 3})


def test_what_is_written_reads_back_the_same_and_best_is_not_resumed(tmp_path):
    ckpts = CheckpointManager(str(tmp_path), 2)
    path = ckpts.save(train_checkpoint(32).to_state(), 32)
    back = Checkpoint.read(path, kind="train")
    want = train_checkpoint(32)
    assert torch.equal(back.G_ema["w"], want.G_ema["w"]) and back.nimg == 32
    assert {k: v for k, v in vars(back).items() if k != "G_ema"} == {k: v for k, v in vars(want).items() if k != "G_ema"}

    best = Checkpoint(kind="best", config={}, model_info=want.model_info, G_ema=want.G_ema, progress={"nimg": 32},
                      best={"metric": "fid50k", "value": 12.5}, metrics={"fid50k": 12.5})
    best.write(str(tmp_path / "best.pt"))
    assert Checkpoint.read(str(tmp_path / "best.pt")).best == {"metric": "fid50k", "value": 12.5}
    with pytest.raises(ValueError, match="best-metric snapshot: it holds G_ema only"):
        Checkpoint.read(str(tmp_path / "best.pt"), kind="train")


@pytest.mark.parametrize("field, value, message", [
    ("progress.nimg", -64, "'progress.nimg' must be an integer >= 0, got int -64"),
    ("progress.nimg", "64", "'progress.nimg' must be an integer >= 0, got str '64'"),
    ("progress.lr", 1, "'progress' must be a dict of nimg, step, tick"),
    ("model_info.resolution", 1048576, "model_info key 'resolution' must be a power of 2 from 4 to 8192"),
    ("model_info.channels", True, "model_info key 'channels' must be an integer from 1 to 4, got True"),
    ("model_info.family", None, "'model_info.family' must be a model family name"),
    ("G_ema.w", [1, 2], "'nets.G_ema' must be a dict of tensors"),
    ("stage.alpha", float("nan"), "'stage' must be integer resolution and batch_size, finite alpha and lrs"),
    ("kind", "evil", "'kind' must be one of ('train', 'best')"),
    ("data", None, "'data' must be a dict"),
])
def test_a_field_of_the_wrong_type_or_out_of_bounds_is_refused_naming_it(tmp_path, field, value, message):
    state = train_checkpoint(16).to_state()
    section, _, key = field.partition(".")
    target = state["nets"]["G_ema"] if section == "G_ema" else state
    if key and section != "G_ema":
        target = state[section]
    if value is None and not key:
        del state[section]
    elif value is None:
        del target[key]
    else:
        target[key or section] = value
    path = str(tmp_path / "ckpt-000000000016.pt")
    save_atomic(seal(state), path)
    with pytest.raises(DamagedCheckpoint) as e:
        Checkpoint.read(path)
    assert str(e.value).startswith(f"checkpoint {path}: ") and message in str(e.value), str(e.value)
