"""A status line for long runs: runs done of planned, failures so far, time elapsed.

Shown on a terminal once a run has taken longer than a couple of seconds (or always
with ``--progress``), on stderr, rewritten in place and erased at the end; in a CI log
(stderr not a terminal) it stays quiet unless asked for, and then prints a plain line
every few seconds instead of rewriting one.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

#: a terminal run shows the line after this many seconds
_AFTER = 2.0
#: a log (not a terminal) gets a line at most this often
_LOG_EVERY = 10.0


class Progress:
    """Counts finished runs; :meth:`update` after each, :meth:`close` at the end."""

    def __init__(self, *, forced: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = forced or self.tty
        self.planned = 0
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last_log = 0.0
        self._shown = False

    def plan(self, planned: int) -> None:
        self.planned = planned

    def text(self) -> str:
        total = f"/{self.planned}" if self.planned else ""
        failures = f", {self.failed} failed" if self.failed else ""
        return f"[{self.done}{total}] runs done{failures}, {time.monotonic() - self.started:.0f}s"

    def update(self, *, failed: bool) -> None:
        self.done += 1
        self.failed += int(failed)
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self.started >= _AFTER or self._shown:
                self.stream.write("\r\x1b[K" + self.text())
                self.stream.flush()
                self._shown = True
        elif now - self._last_log >= _LOG_EVERY or self.done == self.planned:
            print(f"progress: {self.text()}", file=self.stream, flush=True)
            self._last_log = now

    def clear(self) -> None:
        """Erase the line before other output goes to the terminal."""
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def redraw(self) -> None:
        if self.tty and self._shown:
            self.stream.write(self.text())
            self.stream.flush()

    def close(self) -> None:
        self.clear()
        self._shown = False
