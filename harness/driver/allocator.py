"""The reference PCI slot allocator of the libvirt-side CHV driver.

Model: CHV has one bus (0) per PCI segment with slots 0..31; slot 0 is the host bridge, so
devices get slots 1..31 (:data:`FIRST_SLOT`..:data:`LAST_SLOT`), function 0. A slot is
identified by ``(segment, slot)``; the allocator works on the devices of one or more
:class:`~harness.model.domain.Domain` definitions and never keeps state of its own, so it is rebuilt
from the definitions after any restart.

Rules (docs/semantics.md gives the reasoning and the catalogue scenarios):

Define (:func:`assign_at_define`)
  1. CHV's implicit rng is added if the domain has none; devices without an alias get one.
  2. Every explicit address is validated for CHV (:func:`~harness.model.address.validate_for_chv`).
  3. All explicit addresses are reserved first; two devices on one slot is an error naming
     both.
  4. Devices without an address get the lowest free slot of segment 0, in this order: rng,
     interfaces, disks, then every other class; within a class, XML order.
  On any error the domain is left unchanged.

Hotplug (:func:`choose_hotplug_address`), with ``live`` and ``persistent`` the definitions
that exist (pass both whatever the attach flags; None for one that does not exist):
  1. An explicit address is validated and must be free in every definition, except that the
     same device (same key) may hold it in the other definition; if the same device has an
     address in another definition, the explicit one must be that address.
  2. Otherwise, if the same device (same key) has an address in a definition, that address
     is kept; it must be free (or held by that device) in every definition.
  3. Otherwise the lowest slot of segment 0 that is free in **both** definitions.
  The live definitions of save images that may still be restored count like the live
  definition (``saved``): restoring one must not meet a slot given away meanwhile.

The allocator never mutates a definition when it fails; :func:`choose_hotplug_address` never
mutates at all (the caller writes the address into the definitions it changes).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from harness.errors import AllocationError
from harness.model.address import PciAddress, validate_for_chv
from harness.model.domain import Device, DeviceClass, Domain

__all__ = [
    "DEFINE_ORDER",
    "FIRST_SLOT",
    "LAST_SLOT",
    "SLOTS",
    "Conflict",
    "SlotMap",
    "adopt_reported",
    "assign_at_define",
    "check_no_duplicates",
    "choose_hotplug_address",
    "cross_conflicts",
    "free_slots",
    "prepare_hotplug",
]

SLOTS = 32
FIRST_SLOT = 1
LAST_SLOT = 31

#: Classes served first at define, in this order; every other class follows (XML order).
DEFINE_ORDER: tuple[DeviceClass, ...] = (
    DeviceClass.RNG,
    DeviceClass.INTERFACE,
    DeviceClass.DISK,
)


def _slot_addr(segment: int, slot: int) -> PciAddress:
    return PciAddress(segment, 0, slot, 0)


def _fmt(segment: int, slot: int) -> str:
    return str(_slot_addr(segment, slot))


@dataclass(frozen=True)
class Conflict:
    """Two different devices claiming one slot (``where`` names the definition(s))."""

    address: PciAddress
    first: str
    second: str
    where: str

    def __str__(self) -> str:
        return (
            f"PCI address {self.address} is used by both {self.first} and {self.second} "
            f"({self.where})"
        )


class SlotMap:
    """Occupancy of (segment, slot) -> owner, built from one or more definitions.

    The owner is kept as a label (for messages) and a device key (to recognise the same
    device in another definition). Bus and function are not part of a slot: CHV has only
    bus 0 and function 0.
    """

    def __init__(self) -> None:
        self._owners: dict[tuple[int, int], tuple[str, tuple[str, str] | None]] = {}

    @classmethod
    def from_domains(cls, *domains: Domain | None) -> SlotMap:
        """Occupancy of the union of ``domains`` (None entries are skipped).

        Within one domain the first device on a slot is recorded; use
        :func:`check_no_duplicates` to find clashes.
        """
        slots = cls()
        for domain in domains:
            if domain is None:
                continue
            for device in domain.devices():
                addr = device.address
                if addr is not None and (addr.domain, addr.slot) not in slots._owners:
                    slots._owners[(addr.domain, addr.slot)] = (device.label, device.key)
        return slots

    def copy(self) -> SlotMap:
        other = SlotMap()
        other._owners = dict(self._owners)
        return other

    def taken(self, addr: PciAddress) -> str | None:
        """The label of the device on ``addr``'s slot, or None if it is free."""
        owner = self._owners.get((addr.domain, addr.slot))
        return owner[0] if owner else None

    def owner_key(self, addr: PciAddress) -> tuple[str, str] | None:
        owner = self._owners.get((addr.domain, addr.slot))
        return owner[1] if owner else None

    def reserve(self, addr: PciAddress, owner: str, key: tuple[str, str] | None = None) -> None:
        """Mark ``addr``'s slot as used by ``owner``; AllocationError if it is taken."""
        current = self._owners.get((addr.domain, addr.slot))
        if current is not None:
            raise AllocationError(
                f"Attempted double use of PCI Address {_fmt(addr.domain, addr.slot)}: "
                f"{owner} and {current[0]}"
            )
        self._owners[(addr.domain, addr.slot)] = (owner, key)

    def release(self, addr: PciAddress) -> None:
        """Free ``addr``'s slot (no-op if free, like libvirt's ReleaseAddr)."""
        self._owners.pop((addr.domain, addr.slot), None)

    def lowest_free(self, segment: int = 0) -> PciAddress:
        """The lowest free slot (1..31) of ``segment``; AllocationError when it is full."""
        for slot in range(FIRST_SLOT, LAST_SLOT + 1):
            if (segment, slot) not in self._owners:
                return _slot_addr(segment, slot)
        raise AllocationError(f"No more available PCI slots on PCI segment {segment}")

    def used(self, segment: int | None = None) -> list[PciAddress]:
        """Used slots in order (of one segment, or all)."""
        return [
            _slot_addr(seg, slot)
            for seg, slot in sorted(self._owners)
            if segment is None or seg == segment
        ]

    def __iter__(self) -> Iterator[tuple[PciAddress, str]]:
        for seg, slot in sorted(self._owners):
            yield _slot_addr(seg, slot), self._owners[(seg, slot)][0]

    def __len__(self) -> int:
        return len(self._owners)

    def as_dict(self) -> dict[str, str]:
        """``{"0000:00:02.0": "interface 52:54:00:e5:b8:01", ...}`` (for reports)."""
        return {str(addr): label for addr, label in self}


def check_no_duplicates(domain: Domain) -> list[Conflict]:
    """Every pair of devices of ``domain`` that share a (segment, slot), in XML order."""
    seen: dict[tuple[int, int], Device] = {}
    conflicts: list[Conflict] = []
    for device in domain.devices():
        addr = device.address
        if addr is None:
            continue
        slot = (addr.domain, addr.slot)
        if slot in seen:
            conflicts.append(
                Conflict(_slot_addr(*slot), seen[slot].label, device.label, domain.name)
            )
        else:
            seen[slot] = device
    return conflicts


def cross_conflicts(live: Domain, persistent: Domain) -> list[Conflict]:
    """Slots used by *different* devices in the live and the persistent definition.

    Such a pair means the next start (persistent -> live) would not reproduce the guest's
    layout, or a device would collide with a reservation: the "defs in sync" invariant.
    """
    persistent_slots: dict[tuple[int, int], Device] = {}
    for device in persistent.devices():
        addr = device.address
        if addr is not None:
            persistent_slots.setdefault((addr.domain, addr.slot), device)
    conflicts: list[Conflict] = []
    for device in live.devices():
        addr = device.address
        if addr is None:
            continue
        other = persistent_slots.get((addr.domain, addr.slot))
        if other is not None and other.key != device.key:
            conflicts.append(
                Conflict(
                    _slot_addr(addr.domain, addr.slot),
                    device.label,
                    other.label,
                    "live and persistent definitions",
                )
            )
    return conflicts


def _define_plan(
    domain: Domain, segments: int, host_bridge_all_segments: bool = True
) -> list[tuple[int, PciAddress]]:
    """(device index, address) for every device that needs one; raises on any error."""
    devices = domain.devices()
    slots = SlotMap()
    for device in devices:
        addr = device.address
        if addr is None:
            continue
        validate_for_chv(
            addr,
            segments=segments,
            device=device.label,
            host_bridge_all_segments=host_bridge_all_segments,
        )
        current = slots.taken(addr)
        if current is not None:
            raise AllocationError(
                f"Attempted double use of PCI Address {addr} by {device.label} "
                f"(already used by {current})"
            )
        slots.reserve(addr, device.label, device.key)
    pending = [i for i, d in enumerate(devices) if d.address is None]
    rank = {cls: n for n, cls in enumerate(DEFINE_ORDER)}
    pending.sort(key=lambda i: (rank.get(devices[i].cls, len(DEFINE_ORDER)), i))
    plan: list[tuple[int, PciAddress]] = []
    for index in pending:
        device = devices[index]
        try:
            addr = slots.lowest_free(0)
        except AllocationError as exc:
            raise AllocationError(f"{device.label}: {exc}") from None
        slots.reserve(addr, device.label, device.key)
        plan.append((index, addr))
    return plan


def assign_at_define(
    domain: Domain, *, segments: int = 1, host_bridge_all_segments: bool = True
) -> None:
    """Apply the define rule (module doc) to ``domain``; unchanged on error.

    Adds the implicit rng and aliases, validates and reserves explicit addresses, then
    gives every other device the lowest free slot in the order rng, interfaces, disks,
    others (XML order within a class).
    """
    if segments < 1:
        raise AllocationError(f"{domain.name}: the number of PCI segments must be >= 1")
    work = domain.copy()
    work.ensure_implicit_rng()
    work.assign_aliases()
    _define_plan(work, segments, host_bridge_all_segments)  # raises before anything changes
    # Replay on the real domain: the same deterministic steps give the same devices.
    domain.ensure_implicit_rng()
    domain.assign_aliases()
    devices = domain.devices()
    for index, addr in _define_plan(domain, segments, host_bridge_all_segments):
        devices[index].set_address(addr)


def _holder_ok(slots: SlotMap, addr: PciAddress, key: tuple[str, str]) -> str | None:
    """None if ``addr`` is free in ``slots`` or held by the device ``key``; else the owner."""
    owner = slots.taken(addr)
    if owner is None or slots.owner_key(addr) == key:
        return None
    return owner


def _ensure_free(
    defs: list[tuple[str, Domain]], addr: PciAddress, key: tuple[str, str], who: str
) -> None:
    """AllocationError unless ``addr`` is free (or held by device ``key``) in every definition."""
    for name, domain in defs:
        owner = _holder_ok(SlotMap.from_domains(domain), addr, key)
        if owner is not None:
            raise AllocationError(
                f"Attempted double use of PCI Address {addr} {who}: "
                f"already used by {owner} in the {name} definition"
            )


def choose_hotplug_address(
    device: Device,
    *,
    live: Domain | None,
    persistent: Domain | None,
    segments: int = 1,
    saved: Sequence[Domain] = (),
    host_bridge_all_segments: bool = True,
) -> PciAddress:
    """The PCI address for hot-plugging ``device`` (precedence in the module doc).

    ``live``/``persistent`` are the definitions that exist (pass both whatever the attach
    flags); ``saved`` are the live definitions of save images that may still be restored
    (they become the live definition again, so they count like it). Raises AddressError
    for an address CHV cannot honour and AllocationError for a slot in use or a full bus.
    Mutates nothing.
    """
    defs = [(name, d) for name, d in (("live", live), ("persistent", persistent)) if d]
    defs += [("saved image", d) for d in saved]
    key = device.key
    known: list[tuple[str, PciAddress]] = []  # the same device's address elsewhere
    if key[1]:
        for name, domain in defs:
            twin = domain.find(key)
            if twin is not None and twin.address is not None:
                known.append((name, twin.address))
    explicit = device.address
    if explicit is not None:
        validate_for_chv(
            explicit,
            segments=segments,
            device=device.label,
            host_bridge_all_segments=host_bridge_all_segments,
        )
        wanted = _slot_addr(explicit.domain, explicit.slot)
        for name, addr in known:
            if _slot_addr(addr.domain, addr.slot) != wanted:
                raise AllocationError(
                    f"{device.label} is at {addr} in the {name} definition; it cannot be "
                    f"attached at {explicit} (attach it without an address, or at the same one)"
                )
        _ensure_free(defs, explicit, key, f"by {device.label}")
        return wanted
    if known:
        if len({a for _, a in known}) > 1:
            detail = ", ".join(f"{a} in the {n} definition" for n, a in known)
            raise AllocationError(
                f"{device.label} has different PCI addresses ({detail}); give an explicit address"
            )
        where, kept = known[0]
        validate_for_chv(
            kept,
            segments=segments,
            device=device.label,
            host_bridge_all_segments=host_bridge_all_segments,
        )
        _ensure_free(defs, kept, key, f"by {device.label} (its address in the {where} definition)")
        return _slot_addr(kept.domain, kept.slot)
    slots = SlotMap.from_domains(live, persistent, *saved)
    try:
        return slots.lowest_free(0)
    except AllocationError as exc:
        raise AllocationError(f"{device.label}: {exc}") from None


def prepare_hotplug(
    device: Device,
    *,
    live: Domain | None,
    persistent: Domain | None,
    segments: int = 1,
) -> Device:
    """A copy of ``device`` with the address :func:`choose_hotplug_address` picks.

    Convenience for drivers and tests: the result can be given to ``Domain.add_device`` of
    each definition the attach changes. ``device`` itself is not modified.
    """
    addr = choose_hotplug_address(device, live=live, persistent=persistent, segments=segments)
    clone = Device(copy.deepcopy(device.element), device.cls)
    clone.set_address(addr)
    return clone


def adopt_reported(domain: Domain, reported: Mapping[str, PciAddress]) -> list[Device]:
    """Write the BDFs CHV reported (``{id: address}``, id = alias) into ``domain``.

    For CHV releases without ``pci_device_id`` (v51) the driver records where CHV put each
    device. Devices whose alias is not in ``reported`` keep their address. Two devices on
    one slot after adoption is an AllocationError and nothing changes. Returns the devices
    whose address changed.
    """
    work = domain.copy()
    changed_idx: list[int] = []
    for index, device in enumerate(work.devices()):
        alias = device.alias
        if alias is None or alias not in reported:
            continue
        addr = reported[alias]
        plain = _slot_addr(addr.domain, addr.slot)
        if device.address != plain:
            device.set_address(plain)
            changed_idx.append(index)
    conflicts = check_no_duplicates(work)
    if conflicts:
        raise AllocationError(f"{domain.name}: reported BDFs clash: {conflicts[0]}")
    devices = domain.devices()
    changed: list[Device] = []
    for index in changed_idx:
        alias = devices[index].alias
        assert alias is not None
        addr = reported[alias]
        devices[index].set_address(_slot_addr(addr.domain, addr.slot))
        changed.append(devices[index])
    return changed


def free_slots(domains: Iterable[Domain | None], segment: int = 0) -> list[int]:
    """Slots of ``segment`` free in every one of ``domains`` (ascending)."""
    slots = SlotMap.from_domains(*domains)
    return [
        s for s in range(FIRST_SLOT, LAST_SLOT + 1) if slots.taken(_slot_addr(segment, s)) is None
    ]
