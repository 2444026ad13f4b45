"""A pool of worker processes that can be stopped at any moment.

``concurrent.futures.ProcessPoolExecutor`` can hang its parent at exit once its
workers have been killed (its queue feeder thread waits on a pipe nobody reads),
and an interrupted run must end within a second or two. :class:`WorkerPool` keeps
it simple: one forked worker per slot, one pipe per worker, one task in flight per
worker. Results come back as they finish; a worker that dies turns its task into
an error result and is replaced; :meth:`WorkerPool.stop` ends every worker
(SIGTERM, then SIGKILL) whatever they are doing.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from harness.lifetime import check_interrupt, init_worker, stop_processes

__all__ = ["WorkerDied", "WorkerPool"]

_CONTEXT = multiprocessing.get_context("fork")


class WorkerDied(Exception):
    """The worker running a task exited before answering."""


def _serve(conn: Any, func: Callable[..., Any]) -> None:
    init_worker()
    try:
        while True:
            try:
                item = conn.recv()
            except EOFError:
                return
            if item is None:
                return
            key, args = item
            try:
                result: tuple[str, Any] = ("ok", func(*args))
            except Exception as exc:  # reported, the worker goes on
                result = ("error", f"{type(exc).__name__}: {exc}")
            conn.send((key, result))
    except KeyboardInterrupt:  # the parent stopped the run
        return


class WorkerPool:
    """``size`` workers running ``func(*args)`` for each task."""

    def __init__(self, func: Callable[..., Any], size: int) -> None:
        self.func = func
        self.size = max(1, size)
        self._workers: dict[Any, tuple[Any, Any | None]] = {}  # conn -> (process, task)

    def _spawn(self) -> Any:
        parent, child = _CONTEXT.Pipe()
        proc = _CONTEXT.Process(target=_serve, args=(child, self.func), daemon=True)
        proc.start()
        child.close()
        self._workers[parent] = (proc, None)
        return parent

    def run(self, tasks: Sequence[tuple[Any, tuple[Any, ...]]]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(key, result)`` for every ``(key, args)`` task as it finishes.
        ``result`` is the function's value, or a :class:`WorkerDied` / error text."""
        queue = list(reversed(tasks))
        for _ in range(min(self.size, len(tasks))):
            self._spawn()
        try:
            for conn in list(self._workers):
                self._give(conn, queue)
            while any(task is not None for _proc, task in self._workers.values()):
                ready = multiprocessing.connection.wait(list(self._workers), timeout=0.2)
                check_interrupt()
                for conn in ready:
                    yield from self._collect(conn, queue)
        finally:
            self.stop()

    def _give(self, conn: Any, queue: list[tuple[Any, tuple[Any, ...]]]) -> None:
        proc, _task = self._workers[conn]
        if not queue:
            self._workers[conn] = (proc, None)
            return
        task = queue.pop()
        self._workers[conn] = (proc, task)
        conn.send(task)

    def _collect(self, conn: Any, queue: list[tuple[Any, tuple[Any, ...]]]) -> Iterator[Any]:
        proc, task = self._workers[conn]
        try:
            key, (status, value) = conn.recv()
        except (EOFError, OSError):  # the worker died with a task in hand
            del self._workers[conn]
            conn.close()
            proc.join(1.0)
            if task is not None:
                yield task[0], WorkerDied(f"worker exited with {proc.exitcode}")
            if queue:
                self._give(self._spawn(), queue)
            return
        yield key, value if status == "ok" else RuntimeError(value)
        self._give(conn, queue)

    def stop(self) -> None:
        """End every worker now (a worker in the middle of a task is stopped too)."""
        procs = []
        for conn, (proc, task) in list(self._workers.items()):
            if task is None:
                try:
                    conn.send(None)
                except OSError:
                    pass
            conn.close()
            procs.append(proc)
        self._workers.clear()
        for proc in procs:  # idle ones leave by themselves; busy ones are stopped
            proc.join(0.05)
        stop_processes(procs)
