"""The two sides of the differential: a fakechv process and the real binary.

Each sequence gets a fresh process per side, in a directory of its own: the API socket,
the event monitor's file (``--event-monitor path=...``), the process's output and the
files of the sequence's placeholders. The real binary runs as root in a network
namespace of its own (:func:`harness.lifetime.private_network`, as the ``chv`` target
runs it), so the taps it creates never reach the machine's; fakechv runs as
``python -m fakechv --profile P`` with the guest model the sequence asks for
(``--eject never`` when no guest boots: a guest that has not booted never ejects).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
from harness.differential.wire import RawConnection, WireError
from harness.lifetime import die_with_parent, private_network

__all__ = [
    "FAKE",
    "REAL",
    "Side",
    "SideSpec",
    "exit_text",
    "read_events",
]

FAKE = "fake"
REAL = "real"
#: how long a side has to answer on its socket after exec
START_TIMEOUT = 15.0
_ROOT = Path(harness.__file__).resolve().parents[1]


def exit_text(code: int | None) -> str:
    """``exit 0``, ``killed by SIGSYS``, ``running``."""
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


@dataclass(frozen=True)
class SideSpec:
    """How to start one side: ``fake`` (fakechv of ``profile``, with ``eject``) or
    ``real`` (``binary``)."""

    kind: str
    profile: str
    binary: Path | None = None
    eject: str = "never"
    #: fakechv's other options (``--backing-files check``, ...)
    fake_options: tuple[str, ...] = ()

    def argv(self, root: Path) -> list[str]:
        common = [
            "--api-socket",
            f"path={root / 'api.sock'}",
            "--event-monitor",
            f"path={root / 'events.json'}",
        ]
        if self.kind == REAL:
            assert self.binary is not None
            return [str(self.binary), *common]
        return [
            sys.executable,
            "-m",
            "fakechv",
            "--profile",
            self.profile,
            "--eject",
            self.eject,
            *self.fake_options,
            *common,
        ]


@dataclass
class Side:
    """One running side of one sequence."""

    spec: SideSpec
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    conn: RawConnection | None = None
    start_error: str | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def socket_path(self) -> str:
        return str(self.root / "api.sock")

    @property
    def events_path(self) -> Path:
        return self.root / "events.json"

    @property
    def log_path(self) -> Path:
        return self.root / "output.log"

    async def start(self) -> bool:
        """Start the process and connect; False (with :attr:`start_error`) if it does
        not come up."""
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.kind == FAKE:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p
            )
            env.pop("FAKECHV_PROFILE", None)
        self._log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                self.spec.argv(self.root),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=str(self.root),
                env=env,
                preexec_fn=private_network if self.kind == REAL else die_with_parent,
            )
        except OSError as exc:
            self.start_error = f"cannot start {self.spec.argv(self.root)[0]}: {exc}"
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        conn = RawConnection(self.socket_path)
        while True:
            if self.proc.poll() is not None:
                self.start_error = (
                    f"{self.kind} side {exit_text(self.proc.returncode)} before it answered: "
                    f"{self.output_tail()}"
                )
                return False
            if os.path.exists(self.socket_path):
                try:
                    await conn.connect(timeout=1.0)
                    self.conn = conn
                    return True
                except WireError:
                    pass
            if loop.time() > deadline:
                self.start_error = f"{self.kind} side did not answer within {START_TIMEOUT:g}s"
                return False
            await asyncio.sleep(0.005)

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit status once the process ended, or None after ``timeout`` seconds."""
        if self.proc is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.005)
        return self.proc.poll()

    async def stop(self) -> None:
        """End the process (SIGTERM, then SIGKILL) and close what is open."""
        if self.conn is not None:
            self.conn.close()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            if await self.wait_exit(2.0) is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await self.wait_exit(2.0)
        if proc is not None:
            with contextlib.suppress(ChildProcessError, OSError):
                proc.wait(0.1)
        if self._log is not None:
            self._log.close()
            self._log = None

    def output_tail(self, limit: int = 600) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return text[-limit:]


def read_events(path: Path) -> list[dict[str, Any]]:
    """The records of an event-monitor file: pretty JSON objects, each followed by a
    blank line (a cut last record is left out)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    decoder = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        try:
            value, i = decoder.raw_decode(text, i)
        except ValueError:
            return out
        if isinstance(value, dict):
            out.append(value)
