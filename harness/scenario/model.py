"""What a scenario is once loaded: its steps, documents, expectations and the vocabulary
of the format (``docs/scenario-format.md``).

:mod:`harness.scenario.load` builds these from YAML files; nothing here reads YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakechv.errors import brief
from harness.chv.capabilities import CAPABILITIES
from harness.errors import HarnessError
from harness.model.domain import DeviceClass
from harness.model.virsh import Command
from harness.scenario.files import DocumentAccess, Unreadable, read_text_file, why_unreadable

__all__ = [
    "DEFAULT_PROFILE",
    "DEVICE_CLASSES",
    "DOMAIN_STATES",
    "FEATURES",
    "KNOWN_PROFILES",
    "SIDES",
    "VIOLATION_RULES",
    "Document",
    "Expectation",
    "Scenario",
    "ScenarioError",
    "SlotSpec",
    "Step",
    "normalise_bdf",
]


class ScenarioError(HarnessError):
    """A scenario file does not follow the format; the message starts with FILE:LINE."""


DEFAULT_PROFILE = "v53"


SIDES = ("live", "persistent", "chv")


#: features a scenario may require from a target (``requires:``)
FEATURES = ("migration", "faults")


#: rules of :mod:`harness.checks.invariants` a ``run`` step may declare in ``violations:``
VIOLATION_RULES = (
    "live-vs-chv",
    "chv-extra",
    "unaddressed",
    "live-vs-persistent",
    "duplicate",
    "moved",
    "changed-after-failure",
)


#: the words a slot map's entry may start with: the device classes, or "unknown"
DEVICE_CLASSES: tuple[str, ...] = (*(c.value for c in DeviceClass), "unknown")


DOMAIN_STATES = ("running", "paused", "shut off", "absent")


#: the CHV releases a scenario can name: the rows of the driver's capability table
KNOWN_PROFILES: tuple[str, ...] = tuple(CAPABILITIES)


_BDF_SHORT = re.compile(r"([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")


_BDF_FULL = re.compile(r"([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")


def normalise_bdf(text: str) -> str | None:
    """``00:04.0`` or ``0000:00:04.0`` -> ``0000:00:04.0`` (None if neither)."""
    match = _BDF_FULL.fullmatch(text)
    if match:
        seg, bus, slot, fn = match.groups()
        return f"{int(seg, 16):04x}:{int(bus, 16):02x}:{int(slot, 16):02x}.{fn}"
    match = _BDF_SHORT.fullmatch(text)
    if match:
        bus, slot, fn = match.groups()
        return f"0000:{int(bus, 16):02x}:{int(slot, 16):02x}.{fn}"
    return None


@dataclass(frozen=True)
class Document:
    """An XML document a step refers to by name (inline text or a file)."""

    name: str
    text: str
    path: Path | None = None  # the file it came from, if any

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else f"document '{self.name}'"


@dataclass(frozen=True)
class SlotSpec:
    """What one slot must hold: ``empty``, a device class or a device label."""

    bdf: str  # "0000:00:04.0"
    value: str  # "empty", a class ("disk") or a label ("disk vdb")

    @property
    def is_class(self) -> bool:
        return self.value in DEVICE_CLASSES


@dataclass
class Expectation:
    """An ``expect:`` step. ``sides`` maps a side to its expected value.

    With ``device``: side -> BDF (``0000:00:04.0``) or ``absent``.
    Without: side -> list of :class:`SlotSpec`, ``same-as-<side>`` or ``snapshot NAME``.
    """

    in_sync: bool = False
    domain: str | None = None
    device: str | None = None
    sides: dict[str, str | list[SlotSpec]] = field(default_factory=dict)
    exact: bool = False
    state: str | None = None


@dataclass
class Step:
    index: int  # 1-based
    line: int
    kind: str  # run | fail | expect | snapshot | fault
    text: str  # the step as written (command, expectation summary, ...)
    host: str
    command: Command | None = None
    message: str | None = None
    violations: tuple[str, ...] = ()
    expect: Expectation | None = None
    snapshot: str | None = None
    fault: dict[str, Any] | None = None


@dataclass
class Scenario:
    path: Path
    name: str
    source: str
    description: str
    profiles: list[str]
    hosts: list[str]
    documents: dict[str, Document]
    steps: list[Step]
    requires: list[str] = field(default_factory=list)
    segments: int = 1
    eject: str = "immediate"  # when the guest ejects removed devices: immediate, never, ms
    tags: list[str] = field(default_factory=list)
    access: DocumentAccess = field(default_factory=DocumentAccess)

    def document(self, ref: str) -> Document:
        """Resolve a FILE argument: a document name, else a path relative to the file."""
        if ref in self.documents:
            return self.documents[ref]
        path = self.path.parent / ref
        refusal = self.access.refusal(self.path, ref)
        if refusal is not None:
            raise ScenarioError(f"{self.path}: document '{brief(ref)}': {refusal}")
        try:
            return Document(ref, read_text_file(path), path.resolve())
        except Unreadable as exc:
            raise ScenarioError(f"{self.path}: document {why_unreadable(ref, exc)}") from None
