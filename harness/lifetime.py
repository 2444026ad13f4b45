"""Process lifetimes of long runs: interrupts end them cleanly, nothing outlives them.

* :func:`interrupts_raise` turns SIGTERM and SIGHUP into :class:`KeyboardInterrupt`
  (as SIGINT already is) for a ``with`` block in the main thread, so ``finally``
  blocks close hypervisors and remove temporary directories however a run is told
  to stop.
* :func:`init_worker` prepares a pool worker: the parent coordinates Ctrl-C (a
  worker ignores SIGINT, which a terminal sends to the whole process group), a
  SIGTERM from the parent unwinds the worker, and the worker gets SIGTERM when
  its parent dies without saying so.
* :func:`die_with_parent` is a ``preexec_fn`` for the hypervisor processes a run
  spawns: they get SIGTERM when the process that spawned them dies.
* :func:`stop_processes` ends a set of processes within a deadline: SIGTERM, a
  wait, then SIGKILL.
* :func:`adopt_orphans` makes this process the reaper of its orphaned descendants
  (a worker's hypervisors after the worker was killed), and :func:`end_descendants`
  stops and reaps every one that is left, so no process and no zombie stays.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = [
    "adopt_orphans",
    "check_interrupt",
    "die_with_parent",
    "end_descendants",
    "init_worker",
    "interrupts_raise",
    "private_network",
    "stop_processes",
]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


#: the signals received during :func:`interrupts_raise` (an interrupt raised inside
#: a ``__del__`` or a callback is swallowed by Python: loops also check this)
_received: list[str] = []


def _raise_interrupt(signum: int, _frame: Any) -> None:
    name = signal.Signals(signum).name
    _received.append(name)
    raise KeyboardInterrupt(name)


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived (for loops between steps)."""
    if _received:
        raise KeyboardInterrupt(_received[-1])


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGINT raise KeyboardInterrupt while the block runs, and
    are remembered for :func:`check_interrupt` (main thread only; a SIGINT the
    process ignores, as a background job does, stays ignored)."""
    installed: list[tuple[signal.Signals, Any]] = []
    _received.clear()
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                if sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
                    continue
                installed.append((sig, signal.signal(sig, _raise_interrupt)))
        yield
    finally:
        for sig, previous in installed:
            signal.signal(sig, previous)


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, value, 0, 0, 0)


def adopt_orphans() -> None:
    """Orphaned descendants are reparented to this process, not to init."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _children() -> set[int]:
    pids: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as fh:
                pids.update(int(p) for p in fh.read().split())
        except (OSError, ValueError):
            continue
    return pids


def end_descendants(deadline: float = 1.0) -> None:
    """SIGTERM every child left (adopted orphans included), SIGKILL it after
    ``deadline`` seconds, and reap them all."""
    end = time.monotonic() + deadline
    signalled: set[int] = set()
    while True:
        pending = _children()
        for pid in pending:
            with contextlib.suppress(ChildProcessError, OSError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    continue  # a zombie, now reaped
            if pid not in signalled:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                signalled.add(pid)
            elif time.monotonic() > end:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if not _children():
            return
        time.sleep(0.02)


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent (the spawning thread) dies."""
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


_CLONE_NEWNET = 0x40000000


def private_network() -> None:
    """In a child before ``exec``: die with the parent and enter a new network
    namespace (root only), so taps a hypervisor creates never reach the machine's."""
    die_with_parent()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def init_worker() -> None:
    """Initializer of a run's pool workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    die_with_parent()


def stop_processes(processes: Iterable[Any], deadline: float = 1.5) -> None:
    """End ``multiprocessing.Process`` objects: SIGTERM, wait up to ``deadline``
    seconds in all, SIGKILL what is left."""
    procs = [p for p in processes if p.is_alive()]
    for proc in procs:
        with contextlib.suppress(OSError):
            proc.terminate()
    end = time.monotonic() + deadline
    for proc in procs:
        proc.join(max(0.0, end - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            with contextlib.suppress(OSError):
                proc.kill()
            proc.join(1.0)
