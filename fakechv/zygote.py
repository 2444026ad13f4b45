"""A fork server for fakechv processes: one warm interpreter forks a new VMM process per
request, so a harness that starts hundreds of hypervisors does not pay an interpreter's
start-up (imports included) for each.

Every child is a process of its own, as a spawned ``fakechv`` would be: its own pid, API
socket, state and log; it runs ``fakechv.cli.main`` with the argv of the request, dies
with the server (``PR_SET_PDEATHSIG``), and the server reaps it. The server itself dies
with its parent.

Protocol, one JSON object per line on stdin, one answer per line on stdout::

    {"argv": ["--api-socket", "path=/run/a.sock", "--profile", "v53"], "log": "/run/a.log"}
    {"pid": 12345}                       (or {"error": "..."})

``python -m fakechv.zygote`` runs it; :class:`harness.driver.launcher.ProcessLauncher`
uses it when asked for (``fork_server=True``).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from typing import Any

__all__ = ["main", "serve"]

_PR_SET_PDEATHSIG = 1

#: the children not reaped yet: killed and reaped when the server ends, so none is
#: left to a parent (often a container's init) that does not reap
_children: set[int] = set()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _reap(_signum: int, _frame: Any) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _children.discard(pid)


def _end_children() -> None:
    """End the children still running (SIGTERM, SIGKILL after a second) and reap each."""
    import time

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in list(_children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 1.0
        while _children and time.monotonic() < deadline:
            for pid in list(_children):
                try:
                    done, _status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    _children.discard(pid)
            time.sleep(0.005)
        if not _children:
            return


def _terminated(_signum: int, _frame: Any) -> None:
    _end_children()
    os._exit(0)


def _warm_up() -> None:
    """Import what a VMM process needs, once, before any fork."""
    import fakechv.api
    import fakechv.cli
    import fakechv.server
    import fakechv.vmm  # noqa: F401


def _child(argv: list[str], log: str | None) -> None:
    """In the forked child: become the VMM process; never returns."""
    code = 1
    try:
        _die_with_parent()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.closerange(3, 1 << 16)  # the server's pipes are not the VMM's
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        if log:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        sys.argv = ["fakechv", *argv]
        from fakechv.cli import main as fakechv_main

        code = fakechv_main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # the child must not fall back into the server loop
        print(f"fakechv: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(requests: Any = None, answers: Any = None) -> None:
    """Answer spawn requests from ``requests`` (stdin) until it closes."""
    requests = requests or sys.stdin
    answers = answers or sys.stdout
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        _answer(requests, answers)
    finally:
        _end_children()


def _answer(requests: Any, answers: Any) -> None:
    for line in requests:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            argv = [str(a) for a in request["argv"]]
            log = request.get("log")
        except (ValueError, KeyError, TypeError) as exc:
            answers.write(json.dumps({"error": f"bad request: {exc}"}) + "\n")
            answers.flush()
            continue
        answers.flush()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            _child(argv, str(log) if log else None)
        _children.add(pid)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()


def main() -> int:
    _die_with_parent()
    # Ctrl-C reaches the whole process group: the harness handles it (and ends this
    # server); the server itself prints no traceback for it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _warm_up()
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # children's output never mixes in
    answers.write(json.dumps({"ready": os.getpid()}) + "\n")
    answers.flush()
    serve(sys.stdin, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
