"""PCI segments, slots and BDF strings as CHV's ``PciBus`` tracks them.

Each segment has one bus with 32 device slots (function always 0). A slot is
Free, Reserved (an explicit ``pci_device_id`` seen at boot) or Allocated
(pci/src/bus.rs ``DeviceIdState``). Implicit allocation takes the lowest Free
slot and skips Reserved ones; explicit allocation takes a Free or Reserved slot
and fails on an Allocated one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from fakechv.errors import ApiError, ErrorKind

__all__ = [
    "NUM_SLOTS",
    "PciSegment",
    "PciTopology",
    "SlotState",
    "format_bdf",
    "parse_bdf",
]

NUM_SLOTS = 32

MSG_NO_SLOT = "Could not find an available device slot on the PCI bus"


class SlotState(enum.Enum):
    FREE = "Free"
    RESERVED = "Reserved"
    ALLOCATED = "Allocated"


def format_bdf(segment: int, slot: int, bus: int = 0, function: int = 0) -> str:
    """``(0, 5) -> "0000:00:05.0"`` (``%04x:%02x:%02x.%x``, lowercase)."""
    return f"{segment:04x}:{bus:02x}:{slot:02x}.{function:x}"


def parse_bdf(text: str) -> tuple[int, int]:
    """``"0000:00:05.0" -> (0, 5)``; raises ValueError naming the text."""
    try:
        seg, bus, rest = text.split(":")
        slot, func = rest.split(".")
        values = (int(seg, 16), int(bus, 16), int(slot, 16), int(func, 16))
    except ValueError:
        raise ValueError(f"not a PCI BDF: {text!r} (expected like 0000:00:05.0)") from None
    if values[1] != 0 or values[3] != 0 or not 0 <= values[2] < NUM_SLOTS:
        raise ValueError(f"not a CHV PCI BDF (bus 0, function 0, slot < 32): {text!r}")
    return values[0], values[2]


def _allocation_error(inner: str) -> ApiError:
    return ApiError(["Failed to find an available PCI device ID", inner], ErrorKind.ALLOCATION)


@dataclass
class PciSegment:
    """One PCI segment (one bus, 32 slots)."""

    id: int
    host_bridge: bool = True
    slots: list[SlotState] = field(default_factory=lambda: [SlotState.FREE] * NUM_SLOTS)

    def __post_init__(self) -> None:
        if self.host_bridge:
            self.slots[0] = SlotState.ALLOCATED

    def __deepcopy__(self, memo: dict[int, Any]) -> PciSegment:
        # the slots are enum members (never copied): a shallow copy of the list is a
        # deep copy, without deepcopy's dispatch for each of the 32 slots
        copied = object.__new__(PciSegment)
        copied.id, copied.host_bridge, copied.slots = self.id, self.host_bridge, list(self.slots)
        memo[id(self)] = copied
        return copied

    def state(self, slot: int) -> SlotState:
        return self.slots[slot]

    def reserve(self, slot: int) -> None:
        """Reserve an explicit slot at boot (``reserve_device_id``)."""
        if not 0 <= slot < NUM_SLOTS:
            raise ApiError(
                [
                    "Could not reserve the PCI device ID",
                    f"Invalid PCI device identifier provided: {slot}",
                ],
                ErrorKind.ALLOCATION,
            )
        if self.slots[slot] is not SlotState.FREE:
            raise ApiError(
                [
                    "Could not reserve the PCI device ID",
                    f"Valid PCI device identifier but already used: {slot}",
                ],
                ErrorKind.ALLOCATION,
            )
        self.slots[slot] = SlotState.RESERVED

    def allocate_implicit(self) -> int:
        """Take the lowest Free slot; Reserved slots are skipped."""
        for idx, st in enumerate(self.slots):
            if st is SlotState.FREE:
                self.slots[idx] = SlotState.ALLOCATED
                return idx
        raise _allocation_error(MSG_NO_SLOT)

    def allocate_explicit(self, slot: int) -> int:
        """Take ``slot`` if it is Free or Reserved."""
        if not 0 <= slot < NUM_SLOTS:
            raise _allocation_error(f"Invalid PCI device identifier provided: {slot}")
        if self.slots[slot] is SlotState.ALLOCATED:
            raise _allocation_error(f"Valid PCI device identifier but already used: {slot}")
        self.slots[slot] = SlotState.ALLOCATED
        return slot

    def allocate(self, slot: int | None) -> int:
        return self.allocate_implicit() if slot is None else self.allocate_explicit(slot)

    def free(self, slot: int) -> None:
        if not 0 <= slot < NUM_SLOTS:
            raise ValueError(f"PCI slot {slot} out of range 0..32")
        self.slots[slot] = SlotState.FREE

    def snapshot(self) -> list[str]:
        return [s.value for s in self.slots]


@dataclass
class PciTopology:
    """All segments of one VM."""

    segments: list[PciSegment]

    @classmethod
    def create(cls, count: int, *, host_bridge_all_segments: bool = True) -> PciTopology:
        if not 1 <= count <= 96:
            raise ValueError(f"number of PCI segments {count} not in range 1..96")
        return cls(
            [PciSegment(i, host_bridge=(i == 0 or host_bridge_all_segments)) for i in range(count)]
        )

    def segment(self, seg: int) -> PciSegment:
        if not 0 <= seg < len(self.segments):
            raise ApiError([f"Invalid PCI segment id: {seg}"], ErrorKind.VALIDATION)
        return self.segments[seg]

    def allocate(self, seg: int, slot: int | None) -> str:
        s = self.segment(seg)
        return format_bdf(seg, s.allocate(slot))

    def free_bdf(self, bdf: str) -> None:
        seg, slot = parse_bdf(bdf)
        self.segment(seg).free(slot)
