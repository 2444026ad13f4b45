"""Pieces of the state machine's steps that need no machine: virsh flag words, explicit
addresses of each kind, and the tests its rules steer by (a save image that conflicts
with the persistent definition, a device CHV places itself, a detach that timed out)."""

from __future__ import annotations

from typing import Any

from harness.checks.invariants import Violation, addresses
from harness.chv.capabilities import ChvCapabilities
from harness.chv.translate import chv_kind
from harness.model.domain import Device, Domain

__all__ = [
    "explicit_address",
    "flag_words",
    "restore_conflicts",
    "slots_in_use",
    "suffix",
    "timed_out_detach",
    "unpinnable",
]


def flag_words(text: str) -> dict[str, bool]:
    """``--live --config`` -> the four flags of an attach or detach."""
    words = set(text.split())
    return {f: f"--{f}" in words for f in ("live", "config", "current", "persistent")}


def suffix(flags: str) -> str:
    """`` FLAGS`` to append to a command, or nothing."""
    return f" {flags}" if flags else ""


def slots_in_use(*doms: Domain | None) -> list[int]:
    """The slots the definitions' devices sit at, sorted."""
    used = {
        d.address.slot
        for dom in doms
        if dom is not None
        for d in dom.devices()
        if d.address is not None
    }
    return sorted(used)


def explicit_address(kind: str, slot: int, doms: tuple[Domain | None, Domain | None]) -> str | None:
    """An explicit ``pci:D.B.S.F`` of an address kind (``ADDRESS_KINDS`` of
    :mod:`harness.explore.vocabulary`), or None; ``taken`` picks a slot of ``doms``."""
    if kind == "none":
        return None
    if kind == "slot":
        return f"pci:0.0.{slot:02x}.0"
    if kind == "taken":
        used = slots_in_use(*doms)
        pick = used[slot % len(used)] if used else slot
        return f"pci:0.0.{pick:02x}.0"
    if kind == "out-of-range":
        return f"pci:0.0.{32 + slot % 8:02x}.0"
    if kind == "slot-zero":
        return "pci:0.0.00.0"
    if kind == "function":
        return f"pci:0.0.{slot:02x}.{1 + slot % 7}"
    return f"pci:1.0.{slot:02x}.0"  # a segment the domain does not have


def unpinnable(device: Device, caps: ChvCapabilities) -> bool:
    """A device a release with ``pci_device_id`` cannot place where the driver says: CHV
    places it itself and the driver predicts its slot."""
    return bool(caps.device_id_kinds) and not caps.can_address(chv_kind(device))


def restore_conflicts(saved_live: dict[Any, Any], persistent: Domain | None) -> bool:
    """True if a save image's live addresses and the persistent definition disagree.

    Restoring such an image gives a device one address in the live definition and
    another in the persistent one: the reference driver neither refuses the restore nor
    keeps the image's slots out of later config-only allocations.
    """
    if persistent is None:
        return False
    now = addresses(persistent)
    return any(key in now and now[key][1] != bdf for key, (_label, bdf) in saved_live.items())


def timed_out_detach(error: str, changed: list[Violation]) -> bool:
    """A detach that timed out and changed only CHV's side (rule H4: the device left
    CHV's config, the guest has not ejected it yet)."""
    return "timed out" in error and all(v.side == "chv" for v in changed)
