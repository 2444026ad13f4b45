"""Fault injection: make the next calls to an endpoint fail as CHV would.

A :class:`FaultRule` says "the next ``count`` calls of ``endpoint`` fail with
``status`` and the error body ``messages``"; rules are consumed in order. The
default messages are the ones CHV gives for a device-manager failure of that
endpoint (``["Error from API", "The disk could not be added to the VM", "Error
from device manager", ...]``).

Command-line form (``fakechv --fault``): ``ENDPOINT[:COUNT[:STATUS]]``, e.g.
``vm.add-disk:1`` or ``vm.add-net:2:500``; see :func:`parse_fault_spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fakechv.devices import ADD_ENDPOINTS, DEVICE_KINDS
from fakechv.errors import brief

__all__ = ["FaultRule", "FaultSet", "default_messages", "parse_fault_spec"]

_ACTION_MESSAGES: dict[str, str] = {
    "vm.create": "The VM could not be created",
    "vm.boot": "The VM could not boot",
    "vm.delete": "The VM could not be deleted",
    "vm.shutdown": "The VM could not shutdown",
    "vm.reboot": "The VM could not reboot",
    "vm.pause": "The VM could not be paused",
    "vm.resume": "The VM could not resume",
    "vm.info": "The VM info is not available",
    "vm.counters": "The VM info is not available",
    "vm.remove-device": "The device could not be removed from the VM",
    "vm.snapshot": "The VM could not be snapshotted",
    "vm.restore": "The VM could not be restored",
    "vm.resize": "The VM could not be resized",
    "vm.resize-disk": "The disk could not be resized",
    "vm.resize-zone": "The memory zone could not be resized",
    "vm.power-button": "Error triggering power button",
    "vm.nmi": "Error triggering NMI",
    "vm.send-migration": "Error dispatching the migration worker",
    "vm.receive-migration": "Error receiving migration",
    "vmm.shutdown": "The VMM could not shutdown",
}


def default_messages(endpoint: str) -> list[str]:
    """Plausible CHV error messages for a failure of ``endpoint``."""
    kind = ADD_ENDPOINTS.get(endpoint)
    if kind is not None:
        action = DEVICE_KINDS[kind].add_error or "The device could not be added to the VM"
        return ["Error from API", action, "Error from device manager", "fakechv injected fault"]
    action = _ACTION_MESSAGES.get(endpoint, f"{endpoint} failed")
    return ["Error from API", action, "fakechv injected fault"]


@dataclass
class FaultRule:
    """Fail the next ``count`` calls of ``endpoint`` (e.g. ``vm.add-disk``)."""

    endpoint: str
    count: int = 1
    status: int = 500
    messages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.endpoint, str) or not self.endpoint:
            raise ValueError(
                f"fault endpoint must be a non-empty string, not {brief(self.endpoint)}"
            )
        self.endpoint = self.endpoint.removeprefix("/api/v1/").removeprefix("/")
        if len(self.endpoint) > 64 or not self.endpoint.isprintable():
            raise ValueError(f"fault endpoint {brief(self.endpoint)} is not an endpoint name")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(
                f"fault count for {self.endpoint} must be >= 1, not {brief(self.count)}"
            )
        if (
            isinstance(self.status, bool)
            or not isinstance(self.status, int)
            or not 400 <= self.status <= 599
        ):
            raise ValueError(
                f"fault status for {self.endpoint} must be 400..599, not {brief(self.status)}"
            )
        if not isinstance(self.messages, list) or not all(
            isinstance(m, str) for m in self.messages
        ):
            raise ValueError(f"fault messages for {self.endpoint} must be a list of strings")
        if not self.messages:
            self.messages = default_messages(self.endpoint)

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "count": self.count,
            "status": self.status,
            "messages": list(self.messages),
        }

    @classmethod
    def from_json(cls, data: Any) -> FaultRule:
        if not isinstance(data, dict):
            raise ValueError(f"a fault rule must be a JSON object, not {brief(data)}")
        unknown = set(data) - {"endpoint", "count", "status", "messages"}
        if unknown:
            raise ValueError(f"unknown fault rule field(s): {brief(sorted(unknown))}")
        if "endpoint" not in data:
            raise ValueError("a fault rule needs an 'endpoint'")
        return cls(
            endpoint=data["endpoint"],
            count=data.get("count", 1),
            status=data.get("status", 500),
            messages=list(data.get("messages") or []),
        )


def parse_fault_spec(text: str) -> FaultRule:
    """``"vm.add-disk:1"`` / ``"vm.add-net:2:500"`` -> :class:`FaultRule`."""
    parts = text.strip().split(":")
    if not parts[0] or len(parts) > 3:
        raise ValueError(
            f"bad fault spec {brief(text)}: expected ENDPOINT[:COUNT[:STATUS]], e.g. vm.add-disk:1"
        )
    try:
        count = int(parts[1]) if len(parts) > 1 else 1
        status = int(parts[2]) if len(parts) > 2 else 500
    except ValueError:
        raise ValueError(
            f"bad fault spec {brief(text)}: COUNT and STATUS must be integers"
        ) from None
    try:
        return FaultRule(parts[0], count, status)
    except ValueError as exc:
        raise ValueError(f"bad fault spec {brief(text)}: {exc}") from None


class FaultSet:
    """The active fault rules, consumed in order."""

    def __init__(self, rules: list[FaultRule] | None = None) -> None:
        self.rules: list[FaultRule] = list(rules or [])

    def add(self, rule: FaultRule) -> None:
        self.rules.append(rule)

    def clear(self) -> None:
        self.rules.clear()

    def take(self, endpoint: str) -> FaultRule | None:
        """Consume one call of the first rule for ``endpoint``."""
        for rule in self.rules:
            if rule.endpoint == endpoint:
                rule.count -= 1
                if rule.count <= 0:
                    self.rules.remove(rule)
                return rule
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.rules]
