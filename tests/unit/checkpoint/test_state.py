"""Checkpoint files: atomic under SIGKILL, last K kept, never unpickle code."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from bigtrain.checkpoint import CheckpointManager, capture_rng, load_state, restore_rng
from bigtrain.checkpoint.state import resolve_resume


def test_keeps_newest_k_and_resolves_latest(tmp_path):
    m = CheckpointManager(str(tmp_path / "ck"), keep=2)
    for nimg in (100, 200, 300):
        m.save({"progress": {"nimg": nimg}}, nimg)
    assert [os.path.basename(p) for p in m.list()] == ["ckpt-000000000200.pt", "ckpt-000000000300.pt"]
    assert load_state(m.latest())["progress"]["nimg"] == 300
    assert resolve_resume("auto", str(tmp_path / "nothing")) is None
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        resolve_resume(str(tmp_path / "nope.pt"), str(tmp_path))


def test_sigkill_during_writes_never_leaves_a_broken_newest_checkpoint(tmp_path):
    folder = tmp_path / "ck"
    # A writer saving ~40 MB checkpoints in a loop, killed at several moments mid-stream.
    writer = textwrap.dedent(f"""
        import torch, sys
        from bigtrain.checkpoint import CheckpointManager
        m = CheckpointManager({str(folder)!r}, keep=3)
        big = torch.arange(10_000_000, dtype=torch.float64)
        n = 0
        while True:
            n += 1
            m.save({{"progress": {{"nimg": n}}, "blob": big + n}}, n)
            print(n, flush=True)
    """)
    last_seen = 0
    for delay in (0.8, 1.3, 1.9):
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one complete checkpoint exists
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        m = CheckpointManager(str(folder), keep=3)
        newest = m.latest()
        state = load_state(newest)  # complete and loadable, whatever moment the kill hit
        n = state["progress"]["nimg"]
        blob = state["blob"]  # every byte of the newest file is the one its writer meant
        assert blob.numel() == 10_000_000 and blob[0].item() == n and blob[-1].item() == 9_999_999 + n
        assert n >= 1
        last_seen = n
    assert last_seen >= 1
    # Temp files from killed writers are ignored by latest() and cleaned by the next save.
    m.save({"progress": {"nimg": 10_000}}, 10_000)
    assert not [f for f in os.listdir(folder) if ".tmp" in f]


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EVIL_MARKER', '/tmp/bigtrain-evil')}",))


def test_loading_never_runs_code_from_a_pickle(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    path = tmp_path / "ckpt-000000000001.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "bigtrain-train-state", "x": _Evil()}, f)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        load_state(str(path))
    assert not marker.exists()


def test_foreign_and_corrupt_files_get_one_line_errors(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="not a bigtrain training-state checkpoint"):
        load_state(str(other))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_state(str(corrupt))


def test_rng_state_round_trip():
    import random

    import numpy as np
    state = capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_cuda_rng_is_this_process_gpus_and_resumes_where_fewer_gpus_are_seen(monkeypatch):
    """The CUDA generator saved is the rank's own GPU's, restored onto the resuming process's GPU,
    also where that process sees fewer GPUs than the saving one did (srun binding one per task):
    torch's set_rng_state_all raised IndexError there. No GPU here, so torch.cuda's generator calls
    are stood in for by a dict of per-device states."""
    gens = {i: torch.tensor([i], dtype=torch.uint8) for i in range(8)}  # the saving process: 8 GPUs
    current = [3]  # rank 3, on cuda:3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": gens[current[0]].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": gens.update({current[0]: state}))

    state = capture_rng()
    assert [int(t) for t in state["cuda"]] == [3]  # rank 3's GPU only
    gens.clear()
    current[0] = 0  # resumed in a process that sees one GPU, at index 0
    restore_rng(state)
    assert {k: int(v) for k, v in gens.items()} == {0: 3}
    # A checkpoint of an older bigtrain: the states of every GPU the saving process saw.
    old = dict(state, cuda=[torch.tensor([10 + i], dtype=torch.uint8) for i in range(8)])
    restore_rng(old)
    assert int(gens[0]) == 10
    current[0] = 3  # the saving setup again: its own GPU's state
    restore_rng(old)
    assert int(gens[3]) == 13


def _flip_a_byte_inside_the_largest_tensor(path) -> None:
    """Flip one bit in the middle of the largest tensor's stored bytes (torch's zip stores them
    uncompressed, and torch.load does not check the zip's CRCs)."""
    import struct
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        pos = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(pos)
        byte = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([byte ^ 0x10]))


def test_a_flipped_byte_or_a_truncation_is_found_and_auto_resume_takes_the_one_before(tmp_path):
    from bigtrain.checkpoint.schema import newest_intact
    from bigtrain.checkpoint.state import DamagedCheckpoint
    from test_schema import train_checkpoint
    run = tmp_path / "run"
    ckpts = CheckpointManager(str(run / "checkpoints"), 3)
    for nimg in (16, 32):
        ckpts.save(train_checkpoint(nimg).to_state(), nimg)
    assert load_state(ckpts.path_for(32))["progress"] == {"nimg": 32, "step": 4}
    assert newest_intact(str(run)) == ckpts.path_for(32)

    _flip_a_byte_inside_the_largest_tensor(ckpts.path_for(32))
    assert torch.load(ckpts.path_for(32), weights_only=True)["progress"]["nimg"] == 32  # torch alone sees nothing
    with pytest.raises(DamagedCheckpoint, match="ckpt-000000000032.pt is damaged: its content does not match"):
        load_state(ckpts.path_for(32))
    warnings = []
    assert newest_intact(str(run), warnings.append) == ckpts.path_for(16)
    assert len(warnings) == 1 and "ckpt-000000000032.pt" in warnings[0] and "skipping it" in warnings[0]

    data = open(ckpts.path_for(16), "rb").read()
    open(ckpts.path_for(16), "wb").write(data[:len(data) // 2])
    with pytest.raises(DamagedCheckpoint, match="truncated"):
        load_state(ckpts.path_for(16))
    assert newest_intact(str(run), warnings.append) is None


def test_a_save_removes_only_temp_files_of_dead_writers(tmp_path):
    """A killed writer's ckpt-*.pt.tmpPID is cleared by the next save; a live process's is not."""
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    m = CheckpointManager(str(tmp_path), keep=2)
    os.makedirs(tmp_path, exist_ok=True)
    for pid in (dead, str(os.getppid())):
        (tmp_path / f"ckpt-000000000016.pt.tmp{pid}").write_bytes(b"partial")
    m.save({"x": torch.zeros(2)}, 32)
    assert sorted(os.listdir(tmp_path)) == [f"ckpt-000000000016.pt.tmp{os.getppid()}", "ckpt-000000000032.pt"]
