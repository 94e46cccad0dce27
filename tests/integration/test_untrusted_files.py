"""Files bigtrain did not write run nothing (docs/security.md), tried as a hostile user would:
a checkpoint whose stored config names a command or a URL as its data, given to `bigtrain eval`."""
from __future__ import annotations

import pytest
import torch
from conftest import FASHION_MNIST, run_cli, tiny_config, train_once, write_config

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


def test_eval_never_reads_a_local_path_a_checkpoint_names(checkpoint):
    """Nor a path: the user names the real images, and the error shows the stored one to copy."""
    r = run_cli(["eval", str(checkpoint), "--metrics", "fid4", "--batch", "4", "--no-cache"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (f"bigtrain: error: give the real images with --data: {checkpoint} was trained on "
                                f"--data '{FASHION_MNIST}', and bigtrain does not open what a checkpoint names "
                                f"(docs/security.md)")


class _Payload:
    """Pickles as a call of os.system: whoever unpickles it with code allowed runs the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os
        return os.system, (self.command,)


@pytest.mark.slow  # DeepSpeed engines: three builds
def test_resuming_a_deepspeed_checkpoint_never_runs_code_from_its_folder(tmp_path):
    """A .ds folder whose files hold a pickled call (with a .pt digest that matches, as an attacker
    would write it), and a .pt naming a folder outside the run dir: both refused, nothing run."""
    import os
    import shutil

    cfg = tiny_config(tmp_path / "run", train={"total_kimg": 0.016}, distributed={"strategy": "deepspeed",
                                                                                   "zero_stage": 1})
    path = write_config(tmp_path / "c.yaml", cfg)
    assert run_cli(["train", path]).returncode == 0
    ckpt = tmp_path / "run" / "checkpoints" / "ckpt-000000000016.pt"
    ds = ckpt.with_suffix(".ds")
    shutil.copytree(ds, tmp_path / "pristine.ds")
    marker = tmp_path / "ran"
    for name in ("G/state/mp_rank_00_model_states.pt", "D/state/zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        shutil.copytree(tmp_path / "pristine.ds", ds, dirs_exist_ok=True)
        torch.save({"module": _Payload(f"touch {marker}")}, ds / name)
        torch.save(seal(torch.load(ckpt, weights_only=True), str(ds)), ckpt)
        r = run_cli(["train", path, "train.total_kimg=0.032"])
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
        assert f"DeepSpeed file {ds / name} cannot be loaded safely" in r.stderr and "posix.system" in r.stderr
        assert not marker.exists()

    # The .pt names another folder (a copy of its own, elsewhere on disk): refused, not followed.
    shutil.rmtree(ds)
    shutil.copytree(tmp_path / "pristine.ds", ds)
    state = torch.load(ckpt, weights_only=True)
    state["strategy"]["G"]["deepspeed_dir"] = str(tmp_path / "pristine.ds" / "G")
    torch.save(seal(state, str(ds)), ckpt)
    r = run_cli(["train", path, "train.total_kimg=0.032"])
    assert r.returncode == 2 and f"names its DeepSpeed state '{tmp_path / 'pristine.ds' / 'G'}'" in r.stderr, r.stderr
    assert "reads only the folder beside it ('ckpt-000000000016.ds/G')" in r.stderr

    # DeepSpeed's universal-checkpoint loader (weights_only=False on its own paths): refused in the config.
    r = run_cli(["train", path, "train.total_kimg=0.032", "--resume", "none", "run.dir=" + str(tmp_path / "u"),
                 "distributed.deepspeed_config={checkpoint: {load_universal: true}}"])
    assert r.returncode == 2 and "distributed.deepspeed_config.checkpoint.load_universal" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "u" / "checkpoints")
