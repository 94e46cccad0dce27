"""Refactoring guard (issue 23): a few training steps of each family, and of DDP with 2 ranks, under a
fixed seed on the CPU give the losses and weights recorded in same_behaviour.json before the
architecture change, bit for bit.

Float results depend on torch's version and the CPU's instruction set, so the comparison runs where
both match the recording (the CI machine and these ones) and is skipped, saying why, elsewhere.
Re-record (only when a change of behaviour is intended, and say so in the commit):
    BIGTRAIN_RECORD_BEHAVIOUR=1 pytest tests/integration/test_same_behaviour.py -m 'slow or not slow'
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import biggan_config, run_torchrun, tiny_config, write_config
from test_grow import progan_config

GOLDEN = Path(__file__).with_name("same_behaviour.json")
RECORD = os.environ.get("BIGTRAIN_RECORD_BEHAVIOUR") == "1"


def _environment() -> dict:
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        t = state[k]
        if isinstance(t, torch.Tensor):
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                     if t.numel() else b"")
    return h.hexdigest()


def _observed(run_dir: Path) -> dict:
    """Every tick's losses (stats.jsonl) and digests of the final G_ema, G and D."""
    rows = [json.loads(line) for line in open(run_dir / "stats.jsonl")]
    losses = [{k: v for k, v in r.items() if k.startswith("Loss/")} for r in rows]
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))
    from bigtrain.checkpoint.schema import Checkpoint
    ckpt = Checkpoint.read(str(ckpts[-1]))
    return {"losses": losses, "nimg": ckpt.nimg, "G_ema": _digest(ckpt.G_ema),
            **{net: _digest(ckpt.strategy[net]["module"]) for net in ("G", "D")}}


def _check(name: str, observed: dict) -> None:
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {"environment": _environment(), "runs": {}}
    if RECORD:
        golden["environment"] = _environment()
        golden["runs"][name] = observed
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        return
    if golden["environment"] != _environment():
        pytest.skip(f"recorded with {golden['environment']}, this is {_environment()}: float results differ")
    want = golden["runs"][name]
    assert observed["losses"] == want["losses"]
    assert {k: observed[k] for k in ("nimg", "G_ema", "G", "D")} == {k: want[k] for k in ("nimg", "G_ema", "G", "D")}


def _train_in_process(cfg: dict, tmp_path: Path) -> Path:
    from bigtrain.config import load_config
    from bigtrain.train.config import TrainConfig
    from bigtrain.train.loop import Trainer

    path = write_config(tmp_path / "cfg.yaml", cfg)
    Trainer(load_config(path, [], TrainConfig), resume=None, config_source=path).run()
    return Path(cfg["run"]["dir"])


FAMILIES = {
    # R1 and path length at interval 2, style mixing, noise inputs, DiffAugment.
    "stylegan2": lambda d: tiny_config(d, train={"total_kimg": 0.032}),
    # ADA's pipe at p 0.5 with its controller, FreezeD-free.
    "stylegan2-ada": lambda d: tiny_config(d, loss={"augment": []}, train={"total_kimg": 0.032},
                                           augment={"kind": "ada", "p": 0.5, "interval": 2, "speed_kimg": 0.1}),
    # Growing 4 -> 8 with a fade-in, WGAN-GP.
    "progan": lambda d: progan_config(d, train={"total_kimg": 0.040}),
    # Class-conditional, 2 D steps per G step, orthogonal regularization, spectral norm, batch norm.
    "biggan": lambda d: biggan_config(d),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_trains_as_before(tmp_path, family):
    _check(family, _observed(_train_in_process(FAMILIES[family](tmp_path / "run"), tmp_path)))


@pytest.mark.slow
def test_ddp_two_ranks_train_as_before(tmp_path):
    cfg = tiny_config(tmp_path / "run", distributed={"strategy": "ddp"}, train={"total_kimg": 0.032, "batch_gpu": 4})
    r = run_torchrun(2, ["train", write_config(tmp_path / "ddp.yaml", cfg)])
    assert r.returncode == 0, r.stderr[-3000:]
    _check("ddp-2-ranks", _observed(tmp_path / "run"))
