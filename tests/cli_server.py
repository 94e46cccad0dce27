"""The tests' `python -m bigtrain` without the interpreter's start-up: a per-worker server that
has imported torch once (about 2.5 s per process for torch and 2 s more for torch._dynamo on a
2-core machine; in one whole-suite run `import torch` was 643 s of the 2244 s that bigtrain
processes ran) and forks one child per CLI call. The child sets the call's working folder,
environment, argv and standard streams, then runs bigtrain's __main__ exactly as `python -m` does,
and exits through the interpreter's normal shutdown (atexit handlers, flushes). Only torch, numpy
and the standard library are imported before the fork, never bigtrain, so everything bigtrain
reads at import time is read in the child.

The same server forks the processes of a torchrun: the torchrun agent itself (run_torchrun) and
its workers, each of which torchrun starts as tests/rank_client.py, a standard-library script that
hands its arguments, environment and streams over and stands in for the forked rank.

What a user's fresh process does that this does not: its own interpreter start and `import
torch`. The tests that send signals to ranks, start Slurm jobs, or build kernels start real
interpreters (tests/conftest.py). BIGTRAIN_TEST_EXEC=1 makes every CLI call and every torchrun
worker a fresh interpreter.

Protocol (one UNIX socket per server; calls may overlap): the client sends one JSON line
{"args", "env", "cwd", "module"}, the child's stdin, stdout and stderr as SCM_RIGHTS file
descriptors with its first bytes; a waiter forked for the call answers with the child's pid, then
with its exit code (negative: killed by a signal). A client that closes its end first has its
child killed."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys


def _serve(path: str) -> dict | None:
    """Accept calls until the client side goes away; in a forked child, return its call."""
    parent = os.getppid()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    server.settimeout(2.0)
    print("ready", flush=True)
    while True:
        _reap()
        try:
            conn, _ = server.accept()
        except socket.timeout:
            if os.getppid() != parent:  # the pytest worker is gone
                return None
            continue
        conn.settimeout(None)
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        while not msg.endswith(b"\n"):
            more = conn.recv(1 << 16)
            if not more:
                raise ConnectionError("the tests' CLI client closed the connection mid-call")
            msg += more
        call = json.loads(msg.decode())
        # A waiter per call, so that calls may overlap (the ranks of one torchrun): it forks the
        # call's process and reports on it while this loop takes the next call.
        if os.fork() == 0:
            server.close()
            pid = os.fork()
            if pid == 0:
                conn.close()
                for target, fd in enumerate(fds):
                    os.dup2(fd, target)
                    os.close(fd)
                return call
            try:
                for fd in fds:
                    os.close(fd)
                _wait(conn, pid)
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)
        conn.close()


def _reap() -> None:
    """Collect the waiters that have finished."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _wait(conn: socket.socket, pid: int) -> None:
    """Send the child's pid, then its exit code; if the client goes first (a timeout, or a rank
    client killed with SIGKILL), kill the child: nothing is left running that nobody waits for."""
    import select
    try:
        conn.sendall(f"{pid}\n".encode())
        poller = select.poll()
        poller.register(conn, select.POLLIN | select.POLLHUP)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                with contextlib.suppress(OSError):  # a client gone by now has nothing to hear
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                return
            if poller.poll(50) and not conn.recv(1):
                break
    except OSError:
        pass  # the client is gone
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def main() -> None:
    import numpy  # noqa: F401  (imported by torch in any case)
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (torch.optim's first param group imports it: 2 s more)

    call = _serve(sys.argv[1])
    if call is None:
        return
    os.chdir(call["cwd"])
    os.environ.clear()
    os.environ.update(call["env"])
    # As `python -m MODULE` from that folder: argv[0] the module's file, the folder first on the path.
    import runpy
    sys.argv = ["-m", *call["args"]]
    sys.path[0] = os.getcwd()
    runpy.run_module(call.get("module", "bigtrain"), run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
