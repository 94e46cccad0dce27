"""train.channels_last: G's and D's weights and activations in the NHWC layout. It changes the
memory layout only, so training follows the NCHW run to rounding, checkpoints hold the same
weights, and a run can resume with the other layout."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, train_once, write_config

from bigtrain.checkpoint.schema import Checkpoint


def _trainer(cfg: dict, tmp_path: Path, resume: str | None = None):
    from bigtrain.config import load_config
    from bigtrain.train.config import TrainConfig
    from bigtrain.train.loop import Trainer

    path = write_config(tmp_path / "c.yaml", cfg)
    return Trainer(load_config(path, [], TrainConfig), resume=resume, config_source=path)


def _train(cfg: dict, tmp_path: Path) -> Path:
    _trainer(cfg, tmp_path).run()
    return Path(cfg["run"]["dir"])


def _losses(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k.startswith("Loss/")} for line in open(run / "stats.jsonl")]


def _checkpoints(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("ckpt-*.pt"))


@pytest.mark.slow  # a tiny run in NHWC and one tick of its resume, about 6 s
def test_channels_last_trains_as_nchw_does_and_resumes_across_layouts(tmp_path, tmp_path_factory):
    # The NCHW run: the suite's shared tiny StyleGAN2 (tiny_config, 4 ticks), trained once per run.
    nchw = train_once(tmp_path_factory, "stylegan2-tiny", tiny_config)
    nhwc = _train(tiny_config(tmp_path / "nhwc", train={"channels_last": True}), tmp_path)
    for a, b in zip(_losses(nchw), _losses(nhwc), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-4), k
    ca, cb = Checkpoint.read(str(_checkpoints(nchw)[-1])), Checkpoint.read(str(_checkpoints(nhwc)[-1]))
    assert ca.nimg == cb.nimg == 64
    for k, v in ca.G_ema.items():
        torch.testing.assert_close(cb.G_ema[k], v, rtol=1e-3, atol=1e-4)
    # The checkpoint holds the NHWC run's conv weights as they were trained...
    w = [v for v in cb.strategy["G"]["module"].values() if v.ndim == 4 and v.shape[1] > 1 and v.shape[-1] > 1]
    assert w and all(v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous() for v in w)
    # ...and an NCHW trainer resumes from it, with Adam's moments in its own weights' layout (a GPU's
    # fused Adam refuses moments laid out unlike their parameter; the CPU's takes a slower path).
    trainer = _trainer(tiny_config(nhwc, train={"total_kimg": 0.08, "channels_last": False}), tmp_path,
                       resume=str(_checkpoints(nhwc)[-1]))
    moments = [(p, st[k]) for wr in trainer.wrapped.values() for p, st in wr.optimizer.state.items()
               for k in ("exp_avg", "exp_avg_sq")]
    assert any(p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1 for p, _ in moments)
    assert all(m.stride() == p.stride() for p, m in moments)
    trainer.run()
    assert Checkpoint.read(str(_checkpoints(nhwc)[-1])).nimg == 80
    assert len(_losses(nhwc)) == 5  # the 4 ticks before and 1 after: resumed, not started over


def test_channels_last_puts_weights_reals_and_features_in_nhwc(tmp_path):
    from bigtrain.config import load_config
    from bigtrain.train.config import TrainConfig
    from bigtrain.train.loop import Trainer

    cfg = tiny_config(tmp_path / "run", train={"channels_last": True})
    cfg["data"] = {"source": "synthetic", "resolution": 16}  # RGB: a 1-channel image is NCHW and NHWC alike
    path = write_config(tmp_path / "c.yaml", cfg)
    trainer = Trainer(load_config(path, [], TrainConfig), config_source=path)
    G, D = trainer.wrapped["G"].raw, trainer.wrapped["D"].raw
    for net in (G, D, trainer.G_ema):
        convs = [p for p in net.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    reals = trainer._reals(4)["real_img"]
    assert reals.is_contiguous(memory_format=torch.channels_last) and not reals.is_contiguous()
    img = G(torch.randn(4, G.z_dim))
    assert img.is_contiguous(memory_format=torch.channels_last) and not img.is_contiguous()
