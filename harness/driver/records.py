"""The driver's records: a domain as the daemon knows it, virsh's device flags, and the
error every refused operation raises."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.chv.client import ChvClient
from harness.driver.launcher import Hypervisor
from harness.driver.statedir import Runtime
from harness.errors import HarnessError
from harness.model.domain import Domain

__all__ = ["AttachFlags", "DomainRecord", "DriverError", "invalid"]


class DriverError(HarnessError):
    """An operation the driver refused or that failed; nothing was changed."""


def invalid(what: str) -> str:
    """libvirt's wording of an operation that is not valid in the domain's state."""
    return f"Requested operation is not valid: {what}"


@dataclass(frozen=True)
class AttachFlags:
    """virsh's device flags: ``--live``, ``--config``, ``--current``, ``--persistent``.

    No flag at all is ``virDomainAttachDevice``: the live domain only.
    """

    live: bool = False
    config: bool = False
    current: bool = False
    persistent: bool = False

    def resolve(self, active: bool) -> tuple[bool, bool]:
        """-> (affect live, affect config) for a domain that is or is not running."""
        if self.current and (self.live or self.config or self.persistent):
            raise DriverError("--current is exclusive with --live, --config and --persistent")
        if self.persistent:
            return active, True
        if self.current:
            return active, not active
        if not (self.live or self.config):
            return True, False
        return self.live, self.config


@dataclass
class DomainRecord:
    """One domain as the daemon knows it."""

    name: str
    persistent: Domain | None = None
    live: Domain | None = None
    runtime: Runtime | None = None
    hypervisor: Hypervisor | None = None
    client: ChvClient | None = None
    events: list[dict[str, object]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.live is not None

    @property
    def state(self) -> str:
        if self.live is None:
            return "shut off"
        if self.runtime is not None and self.runtime.state == "paused":
            return "paused"
        return "running"
