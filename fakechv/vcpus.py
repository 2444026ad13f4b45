"""One OS thread per running vCPU, named as CHV names them.

CHV runs each vCPU of a booted VM on a thread named ``vcpu<N>``
(``thread::Builder::new().name(format!("vcpu{vcpu_id}"))``,
``vmm/src/cpu.rs@v53.0``); they exist from the boot to the shutdown (a paused VM keeps
them; fakechv does not emulate vCPU hotplug, so a resize of a booted VM changes
nothing here). A management stack reads them: libvirt's CH driver lists
``/proc/<pid>/task/*/comm`` after the boot, counts the ``vcpu*`` threads and warns
when the number differs from the domain's maximum vCPUs
(``virCHMonitorRefreshThreadInfo``, then ``Mismatch in the number of cpus``). The
fakechv process runs as many idle threads under those names, so that count comes out
right; only the process (``fakechv.cli``) has them, the library's in-process VMMs do
not.

The kernel's thread name (``comm``) is set with ``prctl(PR_SET_NAME)`` from the
thread itself; Python's own thread name is set too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading

__all__ = ["VcpuThreads"]

_PR_SET_NAME = 15


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _set_os_thread_name(name: str) -> None:
    libc = _libc()
    prctl = getattr(libc, "prctl", None)
    if prctl is not None:  # not Linux: the Python name is all there is
        prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


class _Vcpu:
    def __init__(self, index: int) -> None:
        self.stop = threading.Event()
        named = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(named,), name=f"vcpu{index}", daemon=True
        )
        self.thread.start()
        named.wait(5)  # the thread exists under its name when the request is answered

    def _run(self, named: threading.Event) -> None:
        _set_os_thread_name(threading.current_thread().name)
        named.set()
        self.stop.wait()


class VcpuThreads:
    """The ``vcpu*`` threads of the process: :meth:`set` makes their number match."""

    def __init__(self) -> None:
        self._threads: list[_Vcpu] = []

    @property
    def count(self) -> int:
        return len(self._threads)

    def set(self, count: int) -> None:
        """``count`` threads ``vcpu0`` .. ``vcpu<count-1>`` (0: none)."""
        count = max(0, count)
        while len(self._threads) < count:
            self._threads.append(_Vcpu(len(self._threads)))
        while len(self._threads) > count:
            vcpu = self._threads.pop()
            vcpu.stop.set()
            vcpu.thread.join(timeout=5)

    def close(self) -> None:
        self.set(0)
