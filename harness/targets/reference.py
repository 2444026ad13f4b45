"""The reference target: this project's driver (:mod:`harness.driver`) on fakechv.

:class:`ReferenceTarget` opens :class:`ReferenceHost` objects, each a
:class:`~harness.driver.daemon.Driver` on its own state directory, with in-process
fakechv VMMs (``reference``, fast) or real ``fakechv`` processes
(``reference-process``). A host records the CHV exchanges of each step for the trace.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.checks.invariants import Violation
from harness.errors import HarnessError
from harness.targets.base import DomainView, Host, OperationFailed, UnsupportedOperation

__all__ = ["NEVER_EJECT_TIMEOUT", "ReferenceHost", "ReferenceTarget"]


class _FaultingLauncher:
    """Wraps a launcher: fault rules queued for hypervisors that are not running yet."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.profile: str = inner.profile
        self.pending: list[dict[str, Any]] = []

    async def launch(self, name: str) -> Any:
        hv = await self.inner.launch(name)
        if self.pending:
            rules, self.pending = self.pending, []
            await _send_faults(hv.transport, rules)
        return hv

    async def reconnect(self, key: str) -> Any:
        return await self.inner.reconnect(key)

    async def terminate(self, hypervisor: Any, *, ask: bool = True) -> None:
        await self.inner.terminate(hypervisor, ask=ask)


async def _send_faults(transport: Any, rules: list[dict[str, Any]]) -> None:
    from fakechv.control import Control, ControlError

    try:
        await Control(transport.send).add_faults(rules)
    except ControlError as exc:
        raise UnsupportedOperation(f"the hypervisor refused fault rules {rules}: {exc}") from None


class ReferenceHost:
    """A :class:`~harness.driver.daemon.Driver` on a state directory under ``workdir``."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        launcher: Any,
        segments: int,
        *,
        detach_timeout: float | None = None,
        quirks: frozenset[str] = frozenset(),
    ) -> None:
        self.name = name
        self.quirks = quirks
        self.workdir = workdir
        self.launcher = _FaultingLauncher(launcher)
        self.segments = segments
        self.detach_timeout = detach_timeout
        self.driver: Any = None
        self._exchanges: list[dict[str, Any]] = []
        self._recording = True
        self._generation = 0
        self._info_cache: dict[tuple[int, str], dict[str, object] | None] = {}

    async def open(self) -> ReferenceHost:
        self.driver = await self._open_driver()
        return self

    async def _open_driver(self) -> Any:
        from harness.driver.daemon import Driver

        driver = await Driver.open(
            self.workdir / "state",
            self.launcher,
            segments=self.segments,
            observer=self._observe,
            quirks=self.quirks,
            **({} if self.detach_timeout is None else {"detach_timeout": self.detach_timeout}),
        )
        original = driver.chv_info

        async def chv_info(name: str) -> dict[str, object] | None:
            # The runner inspects a domain several times between two operations (maps,
            # invariants); nothing can change in between, so ask CHV once.
            if self._recording:
                return await original(name)
            key = (self._generation, name)
            if key not in self._info_cache:
                self._info_cache = {k: v for k, v in self._info_cache.items() if k[0] == key[0]}
                self._info_cache[key] = await original(name)
            return self._info_cache[key]

        driver.chv_info = chv_info  # type: ignore[method-assign]
        return driver

    def _observe(self, domain: str, exchange: Any) -> None:
        if not self._recording:
            return
        self._generation += 1
        self._exchanges.append(
            {
                "domain": domain,
                "method": exchange.method,
                "endpoint": exchange.endpoint,
                "request": exchange.request,
                "status": exchange.status,
                "response": exchange.response,
            }
        )

    def take_exchanges(self) -> list[dict[str, Any]]:
        out, self._exchanges = self._exchanges, []
        return out

    async def _call(self, coro: Any) -> Any:
        from harness.driver.records import DriverError

        self._generation += 1
        try:
            return await coro
        except DriverError as exc:
            raise OperationFailed(str(exc)) from exc
        except HarnessError as exc:
            raise OperationFailed(str(exc)) from exc

    async def define(self, xml: str, *, source: str) -> str:
        return str(await self._call(self.driver.define(xml, source=source)))

    async def undefine(self, domain: str) -> None:
        await self._call(self.driver.undefine(domain))

    async def create(self, xml: str, *, source: str) -> str:
        return str(await self._call(self.driver.create(xml, source=source)))

    async def start(self, domain: str) -> None:
        await self._call(self.driver.start(domain))

    async def destroy(self, domain: str) -> None:
        await self._call(self.driver.destroy(domain))

    async def shutdown(self, domain: str) -> None:
        await self._call(self.driver.shutdown(domain))

    async def reboot(self, domain: str) -> None:
        await self._call(self.driver.reboot(domain))

    async def managedsave(self, domain: str) -> None:
        await self._call(self.driver.managedsave(domain))

    async def save(self, domain: str, path: Path) -> None:
        await self._call(self.driver.save(domain, path))

    async def restore(self, path: Path) -> str:
        return str(await self._call(self.driver.restore(path)))

    async def attach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        from harness.driver.records import AttachFlags

        await self._call(
            self.driver.attach_device(domain, xml, AttachFlags(**flags), source=source)
        )

    async def detach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        from harness.driver.records import AttachFlags

        await self._call(
            self.driver.detach_device(domain, xml, AttachFlags(**flags), source=source)
        )

    async def daemon_restart(self) -> None:
        self._generation += 1
        await self.driver.close()
        self.driver = await self._call(self._open_driver())

    async def migrate(self, domain: str, dest: Host, options: dict[str, bool]) -> None:
        if not isinstance(dest, ReferenceHost):
            raise UnsupportedOperation("the reference driver migrates only to reference hosts")
        if options.get("offline"):
            raise UnsupportedOperation("offline migration is not part of the CH driver")
        dest._generation += 1  # the destination changes too
        await self._call(
            self.driver.migrate(
                domain,
                dest.driver,
                live=bool(options.get("live")),
                p2p=bool(options.get("p2p")),
                persistent=bool(options.get("persistent")),
                undefinesource=bool(options.get("undefinesource")),
            )
        )

    async def inject_fault(self, domain: str | None, rule: dict[str, Any]) -> None:
        rule = {k: v for k, v in rule.items() if k != "domain"}
        names = [domain] if domain else self.domains()
        running = [
            self.driver.domains[n]
            for n in names
            if n in self.driver.domains and self.driver.domains[n].hypervisor is not None
        ]
        if (domain and running) or (not domain and len(running) == 1):
            await _send_faults(running[0].hypervisor.transport, [rule])
        else:
            self.launcher.pending.append(rule)

    def domains(self) -> list[str]:
        return list(self.driver.list_domains())

    async def view(self, domain: str) -> DomainView:
        from harness.driver.selfcheck import domain_view

        rec = self.driver.domains.get(domain)
        info = None
        if rec is not None and rec.client is not None:
            with self._quiet():
                info = await self.driver.chv_info(domain)
        return domain_view(self.driver, domain, info)

    async def violations(self, domain: str) -> list[Violation]:
        from harness.driver.selfcheck import check_domain

        with self._quiet():
            return list(await check_domain(self.driver, domain))

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """The runner's own queries: not part of the trace, not spec-checked again."""
        clients = [r.client for r in self.driver.domains.values() if r.client is not None]
        profiles = [c.profile for c in clients]
        self._recording = False
        for c in clients:
            c.profile = None
        try:
            yield
        finally:
            self._recording = True
            for c, p in zip(clients, profiles, strict=True):
                c.profile = p

    async def close(self) -> None:
        if self.driver is not None:
            for name, rec in list(self.driver.domains.items()):
                if rec.hypervisor is not None:
                    try:
                        await self.launcher.terminate(rec.hypervisor)
                    except Exception:  # pragma: no cover - best-effort cleanup
                        pass
                del name
            await self.driver.close()


#: the driver's detach timeout when the simulated guest never ejects (scenarios stay fast)
NEVER_EJECT_TIMEOUT = 0.05


class ReferenceTarget:
    """The reference driver on fakechv: in-process VMMs, or ``fakechv`` processes."""

    features = frozenset({"faults", "migration"})
    profiles: tuple[str, ...] | None = None

    def __init__(
        self,
        *,
        processes: bool = False,
        fork_server: bool | None = None,
        quirks: frozenset[str] | None = None,
    ) -> None:
        """``processes``: fakechv processes instead of in-process VMMs, forked from a warm
        fork server unless ``fork_server`` is False (or ``$BDF_HARNESS_FORK_SERVER=0``).
        ``quirks``: the driver's deliberate deviations (:mod:`harness.driver.quirks`;
        default ``$BDF_HARNESS_QUIRKS``, so that a run's worker processes share them)."""
        from harness.driver.quirks import from_env

        self.processes = processes
        self.quirks = from_env() if quirks is None else quirks
        if fork_server is None:
            fork_server = os.environ.get("BDF_HARNESS_FORK_SERVER", "1") != "0"
        self.fork_server = fork_server
        self.name = "reference-process" if processes else "reference"

    def describe(self, profile: str) -> str:
        where = "processes (python -m fakechv)" if self.processes else "in the harness's process"
        quirks = f"; driver quirks: {', '.join(sorted(self.quirks))}" if self.quirks else ""
        return f"fakechv {profile}, {where}{quirks}"

    async def open_host(
        self,
        name: str,
        workdir: Path,
        profile: str,
        *,
        segments: int = 1,
        eject: str = "immediate",
    ) -> ReferenceHost:
        """``eject``: when the simulated guest ejects removed devices (``immediate``,
        ``never`` or a delay in ms); with ``never`` the driver gives up after 0.05 s."""
        from harness.driver.launcher import InProcessLauncher, ProcessLauncher

        launcher: Any
        if self.processes:
            launcher = ProcessLauncher(
                profile, run_dir=workdir / "run", eject=eject, fork_server=self.fork_server
            )
        else:
            launcher = InProcessLauncher(profile, eject=eject)
        timeout = NEVER_EJECT_TIMEOUT if eject == "never" else None
        host = ReferenceHost(
            name, workdir, launcher, segments, detach_timeout=timeout, quirks=self.quirks
        )
        return await host.open()
