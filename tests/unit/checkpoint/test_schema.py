"""The checkpoint schema (bigtrain/checkpoint/schema.py): what it writes reads back the same, and
a checkpoint whose fields are wrong (sealed with a matching digest, as a hostile file would be) is
refused naming the field, before anything is built from it."""
from __future__ import annotations

import os

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


def test_deep_nesting_links_and_extra_files_in_a_checkpoint(tmp_path):
    """A sealed file nested 5000 deep is damaged, not a RecursionError; a .ds folder's extra file
    (zero_to_fp32's output) is ignored, a link in place of one of its files is damaged and not
    followed; generate/export/eval (kind None) read the .pt without its folder."""
    import os

    from bigtrain.checkpoint.state import load_state
    deep = []
    for _ in range(5000):
        deep = [deep]
    path = str(tmp_path / "deep.pt")
    import sys
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)  # for torch.save to write it
    try:
        torch.save({"format": "bigtrain-train-state", "format_version": 1, "x": deep,
                    "digest": {"algorithm": "sha256", "content": "0" * 64, "ds": None}}, path)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(DamagedCheckpoint):
        load_state(path)

    ckpts = CheckpointManager(str(tmp_path / "run" / "checkpoints"), 2)
    ds = tmp_path / "run" / "checkpoints" / "ckpt-000000000016.ds"
    (ds / "G").mkdir(parents=True)
    (ds / "G" / "state.pt").write_bytes(b"shard")
    path = ckpts.save(train_checkpoint(16).to_state(), 16)
    (ds / "G" / "pytorch_model.bin").write_bytes(b"zero_to_fp32 output")
    assert Checkpoint.read(path, kind="train").nimg == 16
    os.remove(ds / "G" / "state.pt")
    os.symlink("/dev/zero", ds / "G" / "state.pt")
    with pytest.raises(DamagedCheckpoint, match="missing or changed .first: G/state.pt"):
        Checkpoint.read(path, kind="train")
    assert Checkpoint.read(path).nimg == 16  # G_ema alone: the shards are not needed


def test_auto_resume_sets_a_damaged_newest_checkpoint_aside(tmp_path):
    """So it is not "the newest" for later commands, nor kept by the rotation in place of a good one."""
    from bigtrain.checkpoint.schema import newest_intact
    ckpts = CheckpointManager(str(tmp_path / "run" / "checkpoints"), 2)
    for nimg in (16, 32):
        ckpts.save(train_checkpoint(nimg).to_state(), nimg)
    good, bad = ckpts.path_for(16), ckpts.path_for(32)
    open(bad, "r+b").truncate(1000)
    said = []
    assert newest_intact(str(tmp_path / "run"), said.append, set_aside=True) == good
    assert "renamed it ckpt-000000000032.pt.damaged" in said[0]
    assert ckpts.list() == [good] and os.path.exists(bad + ".damaged")
