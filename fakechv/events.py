"""The event monitor: CHV's ``--event-monitor path=P|fd=N`` stream.

CHV serialises each event as pretty-printed JSON (two-space indent) of
``{"timestamp": {"secs", "nanos"}, "source", "event", "properties"}`` -- the
timestamp is the time since the monitor was set up, ``properties`` is ``null``
or a map of strings -- and writes it followed by an empty line (``"\\n\\n"``)
to a file opened write/create/truncate and then switched to non-blocking mode.

:class:`EventWriter` does the same. Writes never block the API: bytes that do
not fit (a slow FIFO reader) wait in a bounded buffer and are flushed when the
fd becomes writable (with a running event loop) or at the next ``emit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_PENDING_BYTES", "EventWriter", "format_event", "open_event_monitor"]

log = logging.getLogger("fakechv.events")

#: Unwritten bytes kept for a slow reader before new events are dropped.
MAX_PENDING_BYTES = 1024 * 1024


def _duration(seconds: float) -> dict[str, int]:
    total_ns = max(0, round(seconds * 1_000_000_000))
    return {"secs": total_ns // 1_000_000_000, "nanos": total_ns % 1_000_000_000}


def format_event(event: Mapping[str, Any], elapsed: float) -> str:
    """One event in CHV's stream format (without the trailing blank line).

    ``event`` has ``source`` and ``event``, optionally ``properties`` (a map,
    values are turned into strings as CHV's are) and ``timestamp`` (seconds as
    a number, or an already-shaped ``{"secs","nanos"}``); without a timestamp
    ``elapsed`` is used."""
    if "source" not in event or "event" not in event:
        raise ValueError(f"event needs 'source' and 'event': {dict(event)!r}")
    stamp = event.get("timestamp")
    if isinstance(stamp, Mapping):
        timestamp: dict[str, int] = {"secs": int(stamp["secs"]), "nanos": int(stamp["nanos"])}
    elif isinstance(stamp, int | float):
        timestamp = _duration(float(stamp))
    else:
        timestamp = _duration(elapsed)
    props = event.get("properties")
    properties = None if props is None else {str(k): str(v) for k, v in dict(props).items()}
    doc = {
        "timestamp": timestamp,
        "source": str(event["source"]),
        "event": str(event["event"]),
        "properties": properties,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


class EventWriter:
    """Writes events to an fd in CHV's format without ever blocking.

    Use :func:`open_event_monitor` to build one from a ``--event-monitor``
    value. ``emit`` may be called from the event loop's thread only."""

    def __init__(
        self, fd: int, *, owns_fd: bool = True, clock: Callable[[], float] = time.monotonic
    ) -> None:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.fd = fd
        self._owns_fd = owns_fd
        self._clock = clock
        self._start = clock()
        self._pending = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broken = False
        self._full = False
        self._slow = False
        self.closed = False
        self.emitted = 0
        self.dropped = 0

    def emit(self, event: Mapping[str, Any]) -> None:
        """Queue one event and write as much as the fd takes right now."""
        if self.closed:
            return
        text = format_event(event, self._clock() - self._start)
        if self._broken:
            self.dropped += 1
            return
        data = text.encode("utf-8", "replace") + b"\n\n"
        if len(self._pending) + len(data) > MAX_PENDING_BYTES:
            self.dropped += 1
            if not self._slow:
                log.warning(
                    "event monitor reader too slow: dropping events from %s/%s on",
                    event.get("source"),
                    event.get("event"),
                )
            self._slow = True
            return
        self._slow = False
        self._pending += data
        self.emitted += 1
        self._flush()

    def _flush(self) -> None:
        """Write what the fd takes now. Never raises: the event stream is a side
        channel, and a write error must never fail the API call that emitted it."""
        while self._pending and not self._broken:
            try:
                n = os.write(self.fd, self._pending)
            except BlockingIOError:
                self._wait_writable()
                return
            except InterruptedError:
                continue
            except OSError as exc:
                self._write_failed(exc)
                return
            del self._pending[:n]
            self._full = False  # written again: the file system has room
        self._stop_waiting()

    def _write_failed(self, exc: OSError) -> None:
        """Drop what could not be written. A full file system may recover (later
        events are tried again); any other error ends the stream."""
        lost = len(self._pending)
        self._pending.clear()
        self.dropped += 1
        self._stop_waiting()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            if not self._full:
                log.warning("event monitor: write failed (%s): events dropped", exc.strerror)
            self._full = True
            return
        self._broken = True
        log.warning(
            "event monitor: write failed (%s): %d bytes dropped, no more events are written",
            exc.strerror or exc,
            lost,
        )

    def _wait_writable(self) -> None:
        if self._loop is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # flushed at the next emit or at close
        with contextlib.suppress(OSError, ValueError, NotImplementedError):
            loop.add_writer(self.fd, self._flush)
            self._loop = loop

    def _stop_waiting(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self.fd)
            self._loop = None

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def close(self, *, flush_timeout: float = 1.0) -> None:
        """Flush what the reader takes within ``flush_timeout`` s, then close."""
        if self.closed:
            return
        self._stop_waiting()
        deadline = time.monotonic() + flush_timeout
        while self._pending and not self._broken and time.monotonic() < deadline:
            self._flush()
            self._stop_waiting()
            if self._pending:
                time.sleep(0.01)
        if self._pending:
            log.warning("event monitor: %d bytes not delivered", len(self._pending))
        self.closed = True
        if self._owns_fd:
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def __call__(self, event: Mapping[str, Any]) -> None:
        self.emit(event)


def open_event_monitor(spec: str) -> EventWriter:
    """Open ``path=P`` (write/create/truncate; a FIFO blocks until a reader
    opens it, as with CHV) or ``fd=N``. Raises ``ValueError`` on a bad value
    and ``OSError`` naming the path or fd when it cannot be opened."""
    key, sep, value = spec.partition("=")
    if not sep or key not in ("path", "fd") or not value:
        raise ValueError(f"--event-monitor {spec!r}: expected path=<file> or fd=<number>")
    if key == "fd":
        try:
            fd = int(value)
        except ValueError:
            raise ValueError(f"--event-monitor fd={value!r}: not a number") from None
        try:
            os.fstat(fd)
        except OSError as exc:
            raise OSError(f"--event-monitor fd={fd}: {exc.strerror}") from None
        return EventWriter(fd)
    try:
        fd = os.open(value, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise OSError(f"--event-monitor path={value}: {exc.strerror}") from None
    return EventWriter(fd)
