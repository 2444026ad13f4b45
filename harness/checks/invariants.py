"""The checks that define "stable and in sync".

Each check returns a list of :class:`Violation` records (empty when all is
well), so scenarios, property tests and reports can show exactly which device,
which side and which BDF went wrong:

* ``live-vs-chv``: every PCI device of the live definition is in CHV's device
  tree at the same BDF;
* ``chv-extra``: CHV has no PCI device the live definition lacks;
* ``unaddressed``: every device of a definition has a PCI address;
* ``live-vs-persistent``: a device in both definitions has one address;
* ``duplicate``: no two devices of a definition share an address;
* ``moved``: an operation that must keep addresses (restart, save/restore,
  daemon restart, reboot, migration) kept them;
* ``changed-after-failure``: a failed operation changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from harness.chv.capabilities import ChvCapabilities
from harness.chv.info import chv_bdfs
from harness.chv.translate import chv_id
from harness.model.address import PciAddress
from harness.model.domain import Device, Domain

__all__ = [
    "Violation",
    "addresses",
    "check_definitions",
    "check_live_vs_chv",
    "check_live_vs_persistent",
    "check_no_duplicates",
    "check_unaddressed",
    "check_unchanged",
]


K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which rule, which device, which side, what was seen."""

    rule: str
    device: str
    side: str
    expected: str | None
    actual: str | None
    detail: str = ""

    @property
    def message(self) -> str:
        exp = self.expected or "nothing"
        act = self.actual or "nothing"
        text = f"[{self.rule}] {self.device}: {self.side} has {act}, expected {exp}"
        return f"{text} ({self.detail})" if self.detail else text

    def as_dict(self) -> dict[str, str | None]:
        return {
            "rule": self.rule,
            "device": self.device,
            "side": self.side,
            "expected": self.expected,
            "actual": self.actual,
            "detail": self.detail,
            "message": self.message,
        }


def _bdf(addr: PciAddress | None) -> str | None:
    return addr.to_chv_bdf() if addr is not None else None


def addresses(domain: Domain | None) -> dict[tuple[str, str], tuple[str, str | None]]:
    """key -> (label, BDF) of every device of a definition."""
    if domain is None:
        return {}
    return {d.key: (d.label, _bdf(d.address)) for d in domain.devices()}


#: a definition's devices, each with its address (read once for all the checks)
_Placed = list[tuple[Device, PciAddress | None]]


def _placed(domain: Domain) -> _Placed:
    return [(d, d.address) for d in domain.devices()]


def check_unaddressed(domain: Domain, side: str) -> list[Violation]:
    return _unaddressed(_placed(domain), side)


def _unaddressed(devices: _Placed, side: str) -> list[Violation]:
    return [
        Violation("unaddressed", d.label, side, "a PCI address", None)
        for d, addr in devices
        if addr is None
    ]


def check_no_duplicates(domain: Domain, side: str) -> list[Violation]:
    return _no_duplicates(_placed(domain), side)


def _no_duplicates(devices: _Placed, side: str) -> list[Violation]:
    seen: dict[tuple[int, int, int], Device] = {}
    out = []
    for d, addr in devices:
        if addr is None:
            continue
        slot = (addr.domain, addr.bus, addr.slot)
        first = seen.get(slot)
        if first is not None:
            bdf = PciAddress(*slot, 0).to_chv_bdf()
            out.append(
                Violation(
                    "duplicate",
                    d.label,
                    side,
                    f"a slot of its own (not {bdf})",
                    bdf,
                    f"also used by {first.label}",
                )
            )
        else:
            seen[slot] = d
    return out


def check_live_vs_chv(
    live: Domain,
    info: Mapping[str, Any],
    caps: ChvCapabilities,
    *,
    chv_id_of: Callable[[Device], str | None] | None = None,
) -> list[Violation]:
    """Live definition against CHV's ``vm.info`` device tree.

    ``chv_id_of`` maps a device to the id CHV knows it by; the default is the id the
    reference driver sends (its alias). A driver that names devices otherwise (libvirt's
    own CH driver) passes its own mapping.
    """
    return _live_vs_chv(_placed(live), info, caps, chv_id_of)


def _live_vs_chv(
    live: _Placed,
    info: Mapping[str, Any],
    caps: ChvCapabilities,
    chv_id_of: Callable[[Device], str | None] | None,
) -> list[Violation]:
    bdfs = dict(chv_bdfs(dict(info)))
    out = []
    for d, addr in live:
        cid = chv_id_of(d) if chv_id_of is not None else chv_id(d, caps)
        actual = bdfs.pop(cid, None) if cid else None
        expected = _bdf(addr)
        if expected is None:
            continue  # reported by check_unaddressed
        if actual != expected:
            detail = f"CHV id {cid!r}" if actual else f"CHV has no device with id {cid!r}"
            out.append(Violation("live-vs-chv", d.label, "chv", expected, actual, detail))
    for cid, bdf in sorted(bdfs.items()):
        out.append(
            Violation(
                "chv-extra",
                f"CHV device {cid}",
                "live",
                None,
                bdf,
                "CHV has a PCI device the live definition does not list",
            )
        )
    return out


def check_live_vs_persistent(live: Domain, persistent: Domain) -> list[Violation]:
    return _live_vs_persistent(_placed(live), _placed(persistent))


def _live_vs_persistent(live: _Placed, persistent: _Placed) -> list[Violation]:
    out = []
    twins: dict[tuple[str, str], PciAddress | None] = {}
    for d, addr in live:
        twins.setdefault(d.key, addr)  # the first of a key, as Domain.find
    for p, addr in persistent:
        twin = twins.get(p.key)
        if twin is None or addr is None:
            continue
        if addr.to_chv_bdf() != twin.to_chv_bdf():
            out.append(
                Violation(
                    "live-vs-persistent",
                    p.label,
                    "persistent",
                    twin.to_chv_bdf(),
                    addr.to_chv_bdf(),
                    "live and persistent definitions disagree",
                )
            )
    return out


def check_unchanged(
    before: Mapping[K, tuple[str, str | None]],
    after: Mapping[K, tuple[str, str | None]],
    *,
    side: str,
    event: str,
) -> list[Violation]:
    """Addresses of devices present before and after ``event`` must not move.

    The maps go from a device's identity (its key, or CHV's id) to (label, BDF)."""
    out = []
    for key, (label, bdf) in before.items():
        if key not in after or bdf is None:
            continue
        now = after[key][1]
        if now != bdf:
            out.append(Violation("moved", label, side, bdf, now, f"moved by {event}"))
    return out


def check_definitions(
    persistent: Domain | None,
    live: Domain | None,
    info: Mapping[str, Any] | None,
    caps: ChvCapabilities,
    *,
    chv_id_of: Callable[[Device], str | None] | None = None,
) -> list[Violation]:
    """Every state invariant of one domain, given its definitions and CHV's ``vm.info``
    (``chv_id_of`` as for :func:`check_live_vs_chv`)."""
    out: list[Violation] = []
    pers = _placed(persistent) if persistent is not None else None
    if pers is not None:
        out += _no_duplicates(pers, "persistent")
        if caps.device_id_kinds:
            out += _unaddressed(pers, "persistent")
    if live is not None:
        devices = _placed(live)
        out += _no_duplicates(devices, "live")
        out += _unaddressed(devices, "live")
        if info is not None:
            out += _live_vs_chv(devices, info, caps, chv_id_of)
        if pers is not None:
            out += _live_vs_persistent(devices, pers)
    return out
