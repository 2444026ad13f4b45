"""The target protocol: what the scenario runner needs of a place that hosts domains.

A :class:`Target` opens :class:`Host` objects, one per scenario host (a management
daemon, a virsh endpoint); a host runs the virsh-like operations and shows each of its
domains as a :class:`~harness.checks.view.DomainView`. A refused operation raises
:class:`OperationFailed` (what ``fail:`` steps expect); one the target cannot do at all
raises :class:`UnsupportedOperation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from harness.checks.invariants import Violation
from harness.checks.view import DomainView
from harness.errors import HarnessError

__all__ = ["DomainView", "Host", "OperationFailed", "Target", "UnsupportedOperation"]


class OperationFailed(HarnessError):
    """The target refused or failed an operation (what ``fail:`` steps expect)."""


class UnsupportedOperation(HarnessError):
    """The target cannot perform this kind of step at all."""


# --------------------------------------------------------------------------- target interface
class Host(Protocol):
    """One management daemon (a virsh endpoint) with its hypervisors."""

    name: str
    workdir: Path

    async def define(self, xml: str, *, source: str) -> str: ...
    async def undefine(self, domain: str) -> None: ...
    async def create(self, xml: str, *, source: str) -> str: ...
    async def start(self, domain: str) -> None: ...
    async def destroy(self, domain: str) -> None: ...
    async def shutdown(self, domain: str) -> None: ...
    async def reboot(self, domain: str) -> None: ...
    async def managedsave(self, domain: str) -> None: ...
    async def save(self, domain: str, path: Path) -> None: ...
    async def restore(self, path: Path) -> str: ...
    async def attach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None: ...
    async def detach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None: ...
    async def daemon_restart(self) -> None: ...
    async def migrate(self, domain: str, dest: Host, options: dict[str, bool]) -> None: ...
    async def inject_fault(self, domain: str | None, rule: dict[str, Any]) -> None: ...

    def domains(self) -> list[str]: ...
    async def view(self, domain: str) -> DomainView: ...
    async def violations(self, domain: str) -> list[Violation]: ...
    def take_exchanges(self) -> list[dict[str, Any]]: ...
    async def close(self) -> None: ...


class Target(Protocol):
    """Where scenarios run: opens hosts."""

    name: str
    features: frozenset[str]  # e.g. {"faults"}; "migration" once supported
    #: the CHV profiles it can run; None: every one
    profiles: tuple[str, ...] | None

    def describe(self, profile: str) -> str:
        """The hypervisor that runs ``profile`` here, for reports."""
        ...

    async def open_host(
        self,
        name: str,
        workdir: Path,
        profile: str,
        *,
        segments: int = 1,
        eject: str = "immediate",
    ) -> Host: ...
