"""PCI slot bookkeeping of fakechv (chv-pci-rules.md sections 1, 3 and 4)."""

from __future__ import annotations

import pytest

from fakechv.errors import ApiError
from fakechv.pci import NUM_SLOTS, PciSegment, PciTopology, SlotState, format_bdf, parse_bdf


def test_format_bdf_is_lowercase_hex_with_chv_widths() -> None:
    assert format_bdf(0, 5) == "0000:00:05.0"
    assert format_bdf(0x1A, 0x1F) == "001a:00:1f.0"
    assert parse_bdf("001a:00:1f.0") == (0x1A, 0x1F)


@pytest.mark.parametrize("text", ["0000:00:05", "zz:00:01.0", "0000:01:01.0", "0000:00:20.0"])
def test_parse_bdf_rejects_non_chv_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="BDF"):
        parse_bdf(text)


def test_segment_has_32_slots_and_host_bridge_at_slot_0() -> None:
    seg = PciSegment(0)
    assert len(seg.slots) == NUM_SLOTS == 32
    assert seg.state(0) is SlotState.ALLOCATED
    assert seg.allocate_implicit() == 1


def test_segment_without_host_bridge_starts_at_slot_0() -> None:
    assert PciSegment(1, host_bridge=False).allocate_implicit() == 0


def test_implicit_allocation_takes_lowest_free_and_skips_reserved() -> None:
    seg = PciSegment(0)
    seg.reserve(1)
    seg.reserve(3)
    assert seg.allocate_implicit() == 2
    assert seg.allocate_implicit() == 4
    assert seg.state(1) is SlotState.RESERVED


def test_explicit_allocation_accepts_free_or_reserved_and_refuses_allocated() -> None:
    seg = PciSegment(0)
    seg.reserve(7)
    assert seg.allocate_explicit(7) == 7
    assert seg.allocate_explicit(9) == 9
    with pytest.raises(ApiError) as exc:
        seg.allocate_explicit(9)
    assert exc.value.messages == [
        "Failed to find an available PCI device ID",
        "Valid PCI device identifier but already used: 9",
    ]


def test_reserve_twice_fails_like_chv() -> None:
    seg = PciSegment(0)
    seg.reserve(5)
    with pytest.raises(ApiError) as exc:
        seg.reserve(5)
    assert exc.value.messages == [
        "Could not reserve the PCI device ID",
        "Valid PCI device identifier but already used: 5",
    ]


def test_full_bus_gives_chv_message() -> None:
    seg = PciSegment(0)
    got = [seg.allocate_implicit() for _ in range(31)]
    assert got == list(range(1, 32))
    with pytest.raises(ApiError) as exc:
        seg.allocate_implicit()
    assert exc.value.messages[-1] == "Could not find an available device slot on the PCI bus"


def test_free_makes_slot_reusable_by_the_next_implicit_allocation() -> None:
    seg = PciSegment(0)
    for _ in range(4):
        seg.allocate_implicit()
    seg.free(2)
    assert seg.allocate_implicit() == 2


def test_topology_host_bridge_per_profile_rule() -> None:
    every = PciTopology.create(2, host_bridge_all_segments=True)
    only0 = PciTopology.create(2, host_bridge_all_segments=False)
    assert every.allocate(1, None) == "0001:00:01.0"
    assert only0.allocate(1, None) == "0001:00:00.0"
    assert only0.allocate(0, None) == "0000:00:01.0"


@pytest.mark.parametrize("count", [0, 97])
def test_topology_segment_count_is_1_to_96(count: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.96"):
        PciTopology.create(count)


def test_topology_free_bdf_round_trip() -> None:
    topo = PciTopology.create(1)
    bdf = topo.allocate(0, None)
    topo.free_bdf(bdf)
    assert topo.allocate(0, None) == bdf
