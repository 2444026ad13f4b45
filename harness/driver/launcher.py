"""Start and find the hypervisor processes a driver manages.

A libvirt daemon spawns one ``cloud-hypervisor`` process per running domain and
finds it again after a daemon restart through its API socket. A *launcher* does
the same for the reference driver:

* :class:`ProcessLauncher` spawns a real process (``fakechv`` by default, or any
  ``cloud-hypervisor`` binary, then in a network namespace of its own) on a Unix socket
  under a run directory;
* :class:`InProcessLauncher` creates a fakechv VMM inside this process (no
  sockets, no processes) for fast simulations. Its VMMs outlive driver objects,
  just as processes outlive a daemon restart.

Both return a :class:`Hypervisor` whose ``key`` is stored in the domain's
runtime state so that a new driver can ``reconnect`` to it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.chv.client import ChvClient, ChvError, InProcessTransport, Transport
from harness.chv.client import UnixSocketTransport as _Unix
from harness.errors import HarnessError
from harness.lifetime import die_with_parent, private_network

__all__ = [
    "Hypervisor",
    "InProcessLauncher",
    "Launcher",
    "LauncherError",
    "ProcessLauncher",
]


class LauncherError(HarnessError):
    """A hypervisor could not be started or reached."""


class ForkedProcess:
    """A fakechv process forked by this process's fork server (:mod:`fakechv.zygote`):
    the part of ``subprocess.Popen`` the launcher uses, by pid (the server reaps it)."""

    _server: subprocess.Popen[str] | None = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    @classmethod
    def _fork_server(cls) -> subprocess.Popen[str]:
        server = cls._server
        if server is None or server.poll() is not None:
            server = subprocess.Popen(
                [sys.executable, "-m", "fakechv.zygote"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=die_with_parent,
            )
            assert server.stdout is not None
            ready = server.stdout.readline()
            if '"ready"' not in ready:
                raise LauncherError(f"the fakechv fork server did not start: {ready!r}")
            cls._server = server
            atexit.register(cls.stop_server)
        return server

    @classmethod
    def stop_server(cls) -> None:
        """End the fork server (it kills and reaps the VMM processes it still has)."""
        server, cls._server = cls._server, None
        if server is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert server.stdin is not None
            server.stdin.close()
        try:
            server.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    @classmethod
    def spawn(cls, argv: list[str], log: Path) -> ForkedProcess:
        import json

        server = cls._fork_server()
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(json.dumps({"argv": argv, "log": str(log)}) + "\n")
        server.stdin.flush()
        answer = json.loads(server.stdout.readline() or "{}")
        if "pid" not in answer:
            raise LauncherError(f"the fakechv fork server refused: {answer.get('error', answer)}")
        return cls(int(answer["pid"]))

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self.returncode = 0  # its exit status went to the fork server
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"fakechv {self.pid}", timeout or 0.0)
            time.sleep(0.005)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class Hypervisor:
    """A running hypervisor: how to reach it and how to find it again."""

    key: str
    transport: Transport
    process: subprocess.Popen[bytes] | ForkedProcess | None = None
    events: list[dict[str, object]] = field(default_factory=list)


class Launcher(Protocol):
    profile: str

    async def launch(self, name: str) -> Hypervisor: ...

    async def reconnect(self, key: str) -> Hypervisor | None: ...

    async def terminate(self, hypervisor: Hypervisor, *, ask: bool = True) -> None:
        """End the hypervisor: ``vmm.shutdown`` first unless ``ask`` is False (a VMM
        blocked in a request, as a receiving one is, answers no other)."""
        ...


class InProcessLauncher:
    """fakechv VMMs living in this process, one per launched domain."""

    def __init__(
        self, profile: str = "v53", *, eject: str = "immediate", faults: list[str] | None = None
    ) -> None:
        from fakechv.profiles import get_profile

        get_profile(profile)  # fail early on an unknown profile
        self.profile = profile
        self.eject = eject
        #: fakechv fault specs (``vm.add-disk:1``) armed in every hypervisor launched
        self.faults = list(faults or [])
        self._vmms: dict[str, Hypervisor] = {}
        self._ids = itertools.count()

    async def launch(self, name: str) -> Hypervisor:
        from fakechv.api import Api
        from fakechv.faults import parse_fault_spec
        from fakechv.profiles import get_profile
        from fakechv.vmm import Vmm

        events: list[dict[str, object]] = []
        vmm = Vmm(get_profile(self.profile), event_sink=events.append)
        key = f"inproc:{name}:{next(self._ids)}"
        api = Api(vmm, faults=[parse_fault_spec(spec) for spec in self.faults])
        hv = Hypervisor(key, InProcessTransport(api), events=events)
        if self.eject != "immediate":
            await _set_eject(hv.transport, self.eject)
        self._vmms[key] = hv
        return hv

    async def reconnect(self, key: str) -> Hypervisor | None:
        return self._vmms.get(key)

    async def terminate(self, hypervisor: Hypervisor, *, ask: bool = True) -> None:
        self._vmms.pop(hypervisor.key, None)

    def running(self) -> list[str]:
        return sorted(self._vmms)


async def _set_eject(transport: Transport, eject: str) -> None:
    """Configure fakechv's simulated guest eject: ``immediate``, ``never``, or ms."""
    from fakechv.control import Control, ControlError

    try:
        if eject in ("immediate", "never"):
            await Control(transport.send).set_eject(eject)
        else:
            await Control(transport.send).set_eject("delay", int(eject))
    except ControlError as exc:
        raise LauncherError(f"fakechv refused eject mode {eject!r}: {exc}") from None


class ProcessLauncher:
    """Spawns one hypervisor process per domain on a Unix socket."""

    def __init__(
        self,
        profile: str = "v53",
        *,
        run_dir: Path | None = None,
        command: list[str] | None = None,
        eject: str = "immediate",
        faults: list[str] | None = None,
        start_timeout: float = 10.0,
        private_net: bool = False,
        fork_server: bool = False,
    ) -> None:
        """``command``: the hypervisor (default ``python -m fakechv``); ``private_net``:
        each process in a network namespace of its own (root only), so the taps a real
        CHV creates stay out of the machine's network; ``fork_server``: fakechv processes
        are forked from one warm interpreter (:mod:`fakechv.zygote`) instead of each
        starting its own (each is still a fresh process with its own VMM)."""
        self.private_net = private_net
        self.fork_server = fork_server
        self.profile = profile
        self.faults = list(faults or [])
        self.run_dir = run_dir or Path(tempfile.mkdtemp(prefix="bdf-hv-"))
        self.command = command or [sys.executable, "-m", "fakechv"]
        self.eject = eject
        self.start_timeout = start_timeout
        self._ids = itertools.count()

    async def launch(self, name: str) -> Hypervisor:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        sock = self.run_dir / f"{name}-{os.getpid()}-{next(self._ids)}.sock"
        log = self.run_dir / f"{sock.stem}.log"
        argv = [*self.command, "--api-socket", f"path={sock}"]
        env = dict(os.environ, FAKECHV_PROFILE=self.profile)
        if self._is_fakechv():
            # the scenarios' domains name images this machine does not have
            argv += ["--profile", self.profile, "--images", "virtual"]
            if self.eject == "never":
                argv += ["--eject", "never"]
            elif self.eject != "immediate":
                argv += ["--eject-delay-ms", self.eject]
            for spec in self.faults:
                argv += ["--fault", spec]
        proc: subprocess.Popen[bytes] | ForkedProcess
        if self.fork_server and self._is_fakechv() and not self.private_net:
            proc = ForkedProcess.spawn(argv[len(self.command) :], log)
        else:
            with log.open("wb") as log_fh:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_fh,
                    stderr=log_fh,
                    env=env,
                    # nothing outlives an interrupted run
                    preexec_fn=private_network if self.private_net else die_with_parent,
                )
        transport = _Unix(str(sock))
        client = ChvClient(transport)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        delay = 0.001
        while True:
            if proc.poll() is not None:
                await transport.close()
                raise LauncherError(
                    f"hypervisor {argv[0]} for {name} exited with {proc.returncode}; see {log}"
                )
            if sock.exists():
                try:
                    await client.ping()
                    break
                except ChvError:
                    pass
            if loop.time() > deadline:
                proc.kill()
                await transport.close()
                raise LauncherError(f"hypervisor for {name} did not answer on {sock}; see {log}")
            await asyncio.sleep(delay)
            delay = min(0.02, delay * 2)
        return Hypervisor(str(sock), transport, process=proc)

    def _is_fakechv(self) -> bool:
        return self.command[-1] == "fakechv" or self.command[-2:] == ["-m", "fakechv"]

    async def reconnect(self, key: str) -> Hypervisor | None:
        if not Path(key).exists():
            return None
        transport = _Unix(key)
        try:
            await ChvClient(transport).ping()
        except ChvError:
            await transport.close()
            return None
        return Hypervisor(key, transport)

    async def terminate(self, hypervisor: Hypervisor, *, ask: bool = True) -> None:
        proc = hypervisor.process
        if ask or proc is None:
            with contextlib.suppress(ChvError):
                await ChvClient(hypervisor.transport).vmm_shutdown()
        else:
            proc.send_signal(signal.SIGTERM)
        await hypervisor.transport.close()
        if proc is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 5.0 if ask else 1.0)
            except TimeoutError:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(FileNotFoundError):
            Path(hypervisor.key).unlink()
