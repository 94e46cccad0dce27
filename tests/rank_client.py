"""A torchrun worker that is a forked child of the tests' CLI server (tests/cli_server.py), not a
fresh interpreter: `python rank_client.py SOCKET ARGS` has the server fork `python -m bigtrain ARGS`
with this process's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...), folder and standard streams,
and stands in for it before torchrun. Only the standard library is imported here, so it starts in
a few tens of milliseconds where a rank that imports torch and torch._dynamo takes about 4 s of CPU
on a 2-core machine (tests/conftest.py's torchrun_cmd uses it).

What torchrun does to its workers reaches the rank: the signals it sends (to this process's group)
are forwarded, the rank's exit code or killing signal becomes this process's own, and if this
process is killed outright (SIGKILL) the server's waiter kills the rank."""
import json
import os
import signal
import socket
import sys

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def send_call(path: str, call: dict, fds: list[int]):
    """The client side of tests/cli_server.py's protocol (tests/conftest.py's run_cli uses it too):
    send CALL with the child's stdin, stdout and stderr FDS to the server at PATH. Returns the
    connection, its reply stream (the exit code comes next on it) and the child's pid, or None if
    the server did not answer."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    data = json.dumps(call).encode() + b"\n"
    sent = socket.send_fds(conn, [data], fds)
    conn.sendall(data[sent:])
    reply = conn.makefile("r")
    line = reply.readline()
    return conn, reply, int(line) if line else None


def main() -> None:
    path, args = sys.argv[1], sys.argv[2:]
    # A signal that comes before the rank exists waits for it.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    _, reply, pid = send_call(path, {"args": args, "env": dict(os.environ), "cwd": os.getcwd()}, [0, 1, 2])
    if pid is None:
        sys.exit("rank_client: the tests' CLI server did not answer")

    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    line = reply.readline()
    if not line:
        sys.exit("rank_client: the tests' CLI server went away before the rank ended")
    code = int(line)
    if code < 0:  # killed by a signal: end the same way
        signal.signal(-code, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [-code])
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
