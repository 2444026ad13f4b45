"""The daemons of a state-machine run: :class:`MachineHost` (a driver, its launcher,
scratch directory and what the machine remembers about its domain) and
:class:`HostOperations`, the host as the step interpreter drives it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.driver.daemon import Driver
from harness.driver.launcher import InProcessLauncher
from harness.driver.records import AttachFlags
from harness.model.domain import Domain
from harness.scenario.interpret import Context
from harness.scenario.model import Document

__all__ = ["HostOperations", "MachineHost", "machine_context"]


@dataclass
class MachineHost:
    """One daemon of the run: its driver, launcher, scratch directory and what the
    machine remembers about its domain."""

    name: str
    root: Path
    launcher: InProcessLauncher
    driver: Driver | None = None
    #: live and CHV addresses at save/managedsave, by image ("managed" for managedsave)
    saved: dict[str, tuple[dict[Any, Any], dict[Any, Any]]] = field(default_factory=dict)
    #: live addresses of persistent devices at the last destroy/shutdown
    stopped: dict[Any, Any] | None = None
    #: a live detach timed out and the guest has not ejected the device yet
    pending_eject: bool = False

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"


class HostOperations:
    """One host of the machine, driven by the step interpreter: the command operations
    of :class:`harness.targets.base.Host` on the host's driver (errors pass through)."""

    def __init__(
        self, host: MachineHost, reopen: Callable[[MachineHost], Awaitable[Driver]]
    ) -> None:
        self.host = host
        self.reopen = reopen
        self.workdir = host.root

    @property
    def driver(self) -> Driver:
        assert self.host.driver is not None
        return self.host.driver

    async def define(self, xml: str, *, source: str) -> str:
        return await self.driver.define(xml, source=source)

    async def create(self, xml: str, *, source: str) -> str:
        return await self.driver.create(xml, source=source)

    async def undefine(self, domain: str) -> None:
        await self.driver.undefine(domain)

    async def start(self, domain: str) -> None:
        await self.driver.start(domain)

    async def destroy(self, domain: str) -> None:
        await self.driver.destroy(domain)

    async def shutdown(self, domain: str) -> None:
        await self.driver.shutdown(domain)

    async def reboot(self, domain: str) -> None:
        await self.driver.reboot(domain)

    async def managedsave(self, domain: str) -> None:
        await self.driver.managedsave(domain)

    async def save(self, domain: str, path: Path) -> None:
        await self.driver.save(domain, path)

    async def restore(self, path: Path) -> str:
        return await self.driver.restore(path)

    async def attach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        await self.driver.attach_device(domain, xml, AttachFlags(**flags), source=source)

    async def detach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        await self.driver.detach_device(domain, xml, AttachFlags(**flags), source=source)

    async def daemon_restart(self) -> None:
        await self.driver.close()
        self.host.driver = None
        self.host.driver = await self.reopen(self.host)

    async def migrate(self, domain: str, dest: HostOperations, options: dict[str, bool]) -> None:
        await self.driver.migrate(
            domain,
            dest.driver,
            live=options.get("live", False),
            p2p=options.get("p2p", False),
            persistent=options.get("persistent", False),
            undefinesource=options.get("undefinesource", False),
        )


def machine_context(
    hosts: dict[str, MachineHost],
    documents: dict[str, str],
    open_driver: Callable[[MachineHost], Awaitable[Driver]],
) -> Context:
    """The step interpreter's view of the machine's hosts and documents."""

    def definitions(host: str, domain: str) -> tuple[Domain | None, Domain | None] | None:
        driver = hosts[host].driver
        rec = driver.domains.get(domain) if driver is not None else None
        return None if rec is None else (rec.live, rec.persistent)

    def document(ref: str) -> Document:
        return Document(ref, documents[ref])

    ops = {name: HostOperations(host, open_driver) for name, host in hosts.items()}
    return Context(ops, document, definitions)
