"""One process per run dir (bigtrain.checkpoint.lock): the holder is named, the lock goes with
its holder, and a free dir checks free. The CLI side (a second `bigtrain train`, SIGKILL) is in
tests/integration/test_cli_train.py."""
from __future__ import annotations

import os
import socket

import pytest

from bigtrain.checkpoint.lock import RunDirBusy, check_run_dir_free, hold_run_dir


def test_a_held_run_dir_is_refused_naming_the_holder_and_freed_after(tmp_path):
    run_dir = str(tmp_path / "run")
    check_run_dir_free(run_dir)  # no lock file yet
    with hold_run_dir(run_dir):
        holder = (tmp_path / "run" / "run.lock").read_text()
        assert holder.startswith(f"host {socket.gethostname()} pid {os.getpid()} since ")
        # flock belongs to the open file, so a second open in this same process is refused too.
        with pytest.raises(RunDirBusy, match=f"run dir {run_dir} is in use by host .* pid {os.getpid()}"):
            with hold_run_dir(run_dir):
                pass
        with pytest.raises(RunDirBusy, match="choose another run.dir"):
            check_run_dir_free(run_dir)
    check_run_dir_free(run_dir)
    with hold_run_dir(run_dir):  # and it can be held again
        pass
