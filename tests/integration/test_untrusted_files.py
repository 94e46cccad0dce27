"""Files bigtrain did not write run nothing (docs/security.md), tried as a hostile user would:
a checkpoint whose stored config names a command or a URL as its data, given to `bigtrain eval`."""
from __future__ import annotations

import pytest
import torch
from conftest import run_cli, tiny_config, train_once

from bigtrain.checkpoint.state import seal


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = train_once(tmp_path_factory, "stylegan2-tiny", tiny_config)
    return run / "checkpoints" / "ckpt-000000000064.pt"


@pytest.mark.parametrize("source", ["pipe:touch {marker}", "http://127.0.0.1:9/{marker}.tar",
                                    "/usr/share/datasets/fashion-mnist::pipe:touch {marker}"])
def test_eval_never_runs_or_fetches_the_data_a_checkpoint_names(checkpoint, tmp_path, source):
    marker = tmp_path / "ran"
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["data"]["source"] = source.format(marker=marker)
    crafted = tmp_path / "crafted.pt"
    torch.save(seal(state), crafted)  # a hostile file carries a digest that matches it
    r = run_cli(["eval", str(crafted), "--metrics", "fid4", "--batch", "4", "--no-cache"])
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{crafted} names its training data" in r.stderr and "a command or URL" in r.stderr
    assert "--data" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()
