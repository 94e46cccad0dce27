"""The tests' `python -m bigtrain` without the interpreter's start-up: a per-worker server that has
imported torch once (about 2.5 s per process for torch and 2 s more for torch._dynamo on a 2-core
machine; in one whole-suite run `import torch` was 643 s of the 2244 s that bigtrain processes
ran) and forks one child per CLI call. The child sets the call's working folder,
environment, argv and standard streams, then runs bigtrain's __main__ exactly as `python -m` does,
and exits through the interpreter's normal shutdown (atexit handlers, flushes). Only torch, numpy
and the standard library are imported before the fork, never bigtrain, so everything bigtrain
reads at import time is read in the child.

What a user's fresh process does that this does not: its own interpreter start and `import
torch`. The tests that send signals, start torchrun or Slurm jobs, or build kernels start real
interpreters (tests/conftest.py). BIGTRAIN_TEST_EXEC=1 makes every CLI call a fresh interpreter.

Protocol (one UNIX socket per server, one call at a time): the client sends one JSON line
{"args", "env", "cwd"}, the child's stdin, stdout and stderr as SCM_RIGHTS file descriptors with
its first bytes; the server answers with the child's pid, then with its exit code (negative: killed
by a signal)."""
from __future__ import annotations

import json
import os
import socket
import sys


def _serve(path: str) -> dict | None:
    """Accept calls until the client side goes away; in a forked child, return its call."""
    parent = os.getppid()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    server.settimeout(2.0)
    print("ready", flush=True)
    while True:
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
        pid = os.fork()
        if pid == 0:
            server.close()
            conn.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            return call
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(f"{pid}\n".encode())
            _, status = os.waitpid(pid, 0)
            conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:
            pass  # the client gave up (a timeout kill): nothing to report
        finally:
            conn.close()


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
    # As `python -m bigtrain` from that folder: argv[0] the module's file, the folder first on the path.
    import runpy
    sys.argv = ["-m", *call["args"]]
    sys.path[0] = os.getcwd()
    runpy.run_module("bigtrain", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
