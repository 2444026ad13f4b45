"""Snapshots of a host's domains, and what changed between two of them.

* :func:`domain_maps`: the three sides of one domain as slot maps (BDF -> device);
* :func:`snapshot_of` / :class:`Snapshot`: everything about a host's domains that a
  refused step must not change (states, addresses per side, and with ``full`` the
  definitions' XML and CHV's ``vm.info``);
* :func:`changed_after_failure`: ``changed-after-failure`` violations between two
  snapshots, naming the device, the side and the BDF;
* :func:`definition_changes`: the address changes of a step, as trace lines.
"""

from __future__ import annotations

import json
from typing import Any

from lxml import etree

from harness.checks.invariants import Violation
from harness.checks.view import DomainView
from harness.model.domain import Domain
from harness.scenario.model import SIDES
from harness.scenario.results import SlotEntry

__all__ = [
    "Addresses",
    "Maps",
    "Snapshot",
    "changed_after_failure",
    "chv_by_label",
    "definition_changes",
    "device_addresses",
    "domain_maps",
    "side_addresses",
    "side_present",
    "snapshot_of",
]


Maps = dict[str, dict[str, SlotEntry]]  # side -> BDF -> entry (one domain)


def domain_maps(view: DomainView) -> Maps:
    maps: Maps = {side: {} for side in SIDES}
    for side, dom in (("live", view.live), ("persistent", view.persistent)):
        if dom is None:
            continue
        for device in dom.devices():
            addr = device.address
            if addr is not None:
                maps[side][addr.to_chv_bdf()] = SlotEntry(
                    device.label, device.cls.value, device.alias
                )
    for bdf, cid in view.chv_bdfs.items():
        label, cls = view.chv_owners.get(cid, (f"CHV device {cid}", "unknown"))
        maps["chv"][bdf] = SlotEntry(label, cls, cid)
    return maps


def device_addresses(dom: Domain | None) -> dict[str, tuple[str, str | None]]:
    if dom is None:
        return {}
    out = {}
    for d in dom.devices():
        addr = d.address
        out["/".join(d.key)] = (d.label, addr.to_chv_bdf() if addr else None)
    return out


Addresses = dict[str, tuple[str, str | None]]  # device key -> (label, BDF)


def side_addresses(view: DomainView) -> dict[str, Addresses]:
    """side -> addresses; the chv side is keyed by label (CHV knows no libvirt keys)."""
    chv: Addresses = {lbl: (lbl, bdf) for lbl, bdf in chv_by_label(view).items()}
    return {
        "live": device_addresses(view.live),
        "persistent": device_addresses(view.persistent),
        "chv": chv,
    }


def chv_by_label(view: DomainView) -> dict[str, str]:
    return {
        view.chv_owners.get(cid, (f"CHV device {cid}", ""))[0]: bdf
        for bdf, cid in view.chv_bdfs.items()
    }


class Snapshot:
    """Everything about a host's domains that a failed step must not change.

    A full snapshot keeps the definitions' XML and works its addresses out from that
    text only when they are asked for: most steps succeed, and a failed step that
    changed no text changed no address either."""

    def __init__(
        self,
        state: dict[str, str | None],
        persistent: dict[str, str | None],
        live: dict[str, str | None],
        info: dict[str, dict[str, Any] | None],
        addresses: dict[str, dict[str, Addresses]] | None = None,
    ) -> None:
        self.state = state
        self.persistent = persistent
        self.live = live
        #: CHV's vm.info as read (a fresh object per read, never changed afterwards)
        self.info = info
        self._addresses = addresses
        #: domain -> its view's CHV maps (a full snapshot), for the addresses later
        self._chv: dict[str, DomainView] = {}

    @property
    def addresses(self) -> dict[str, dict[str, Addresses]]:
        """domain -> side -> addresses (:func:`side_addresses`)."""
        if self._addresses is None:
            self._addresses = {}
            for dom, chv in self._chv.items():
                view = DomainView(
                    dom,
                    self.state[dom],
                    _parsed(self.live[dom]),
                    _parsed(self.persistent[dom]),
                    chv_bdfs=chv.chv_bdfs,
                    chv_owners=chv.chv_owners,
                )
                self._addresses[dom] = side_addresses(view)
        return self._addresses

    def unchanged(self, other: Snapshot, dom: str) -> bool:
        """True if both are full and ``dom``'s state, XML and vm.info are the same in
        both (and so are its addresses)."""
        return (
            dom in self._chv
            and dom in other._chv
            and self.state[dom] == other.state[dom]
            and self.persistent[dom] == other.persistent[dom]
            and self.live[dom] == other.live[dom]
            and self.info[dom] == other.info[dom]
        )


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def _parsed(text: str | None) -> Domain | None:
    """A definition back from a snapshot's text (as it was, no checks on loading)."""
    return None if text is None else Domain(etree.fromstring(text, _PARSER), source="snapshot")


def _xml(dom: Domain | None) -> str | None:
    """A definition's XML for comparison: lxml's serializer, indented as libvirt does
    (the text :meth:`~harness.model.domain.Domain.to_xml` writes, but much faster)."""
    if dom is None:
        return None
    etree.indent(dom.root, space="  ")
    return etree.tostring(dom.root, encoding="unicode")


def snapshot_of(views: dict[str, DomainView], *, full: bool = False) -> Snapshot:
    if not full:
        states = {dom: view.state for dom, view in views.items()}
        addresses = {dom: side_addresses(view) for dom, view in views.items()}
        return Snapshot(states, {}, {}, {}, addresses)
    snap = Snapshot({}, {}, {}, {})
    for dom, view in views.items():
        snap.state[dom] = view.state
        snap.persistent[dom] = _xml(view.persistent)
        snap.live[dom] = _xml(view.live)
        snap.info[dom] = view.chv_info
        # the CHV maps are made afresh for each view and never changed afterwards
        snap._chv[dom] = DomainView(
            dom, view.state, chv_bdfs=view.chv_bdfs, chv_owners=view.chv_owners
        )
    return snap


def changed_after_failure(before: Snapshot, after: Snapshot, host: str) -> list[Violation]:
    """Violations (``changed-after-failure``) for anything a failed step changed."""
    out: list[Violation] = []
    for dom in sorted(set(before.state) | set(after.state)):
        if dom not in after.state:
            out.append(_changed(f"domain {dom}", "host", "present", None, f"{host}: vanished"))
            continue
        if dom not in before.state:
            out.append(_changed(f"domain {dom}", "host", None, "present", f"{host}: appeared"))
            continue
        if before.state[dom] != after.state[dom]:
            out.append(
                _changed(
                    f"domain {dom}", "state", before.state[dom], after.state[dom], "state changed"
                )
            )
        if before.unchanged(after, dom):
            continue
        for side in SIDES:
            b = before.addresses[dom][side]
            a = after.addresses[dom][side]
            for key in sorted(set(b) | set(a)):
                if b.get(key) != a.get(key):
                    label = (b.get(key) or a.get(key) or (key, None))[0]
                    out.append(
                        _changed(
                            label,
                            side,
                            b[key][1] if key in b else None,
                            a[key][1] if key in a else None,
                            f"{dom}: a failed step must not change the {side} side",
                        )
                    )
        if not out and dom in before.live:
            for side, b_val, a_val in (
                ("persistent", before.persistent[dom], after.persistent[dom]),
                ("live", before.live[dom], after.live[dom]),
                ("chv", before.info[dom], after.info[dom]),
            ):
                if b_val != a_val:
                    what = "vm.info" if side == "chv" else f"{side} XML"
                    if side == "chv":
                        where = _json_difference(b_val, a_val, "") or "?"
                    else:
                        assert b_val is None or isinstance(b_val, str)
                        assert a_val is None or isinstance(a_val, str)
                        where = _first_difference(b_val, a_val)
                    out.append(
                        _changed(
                            f"domain {dom}",
                            side,
                            "unchanged",
                            "changed",
                            f"{what} differs: {where}",
                        )
                    )
    return out


def _changed(device: str, side: str, exp: str | None, act: str | None, detail: str) -> Violation:
    return Violation("changed-after-failure", device, side, exp, act, detail)


def _first_difference(a: str | None, b: str | None) -> str:
    """Where two XML texts first differ, briefly."""
    a_lines = (a or "").splitlines()
    b_lines = (b or "").splitlines()
    for i, (x, y) in enumerate(zip(a_lines, b_lines, strict=False)):
        if x != y:
            return f"line {i + 1}: {_brief(x.strip())} -> {_brief(y.strip())}"
    return f"{len(a_lines)} lines -> {len(b_lines)} lines"


def _brief(value: object, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_difference(a: object, b: object, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in b:
                return f"{path}.{key} removed (was {_brief(a[key])})"
            if key not in a:
                return f"{path}.{key} added ({_brief(b[key])})"
            found = _json_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _json_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        if len(a) != len(b):
            extra = a[len(b) :] if len(a) > len(b) else b[len(a) :]
            what = "removed" if len(a) > len(b) else "added"
            return f"{path or '.'}: {len(a)} -> {len(b)} items, {what} {_brief(extra)}"
        return None
    if a != b:
        return f"{path or '.'}: {_brief(a)} -> {_brief(b)}"
    return None


def definition_changes(before: Snapshot, after: Snapshot) -> list[str]:
    """Human-readable definition changes (device addresses) between two snapshots."""
    out: list[str] = []
    for dom in sorted(set(before.state) | set(after.state)):
        if dom not in before.state:
            out.append(f"{dom}: domain appeared ({after.state[dom]})")
        elif dom not in after.state:
            out.append(f"{dom}: domain removed")
            continue
        elif before.state[dom] != after.state[dom]:
            out.append(f"{dom}: {before.state[dom]} -> {after.state[dom]}")
        for side in ("live", "persistent"):
            b = before.addresses.get(dom, {}).get(side, {})
            a = after.addresses[dom][side]
            for key in sorted(set(b) | set(a)):
                if key not in b:
                    out.append(f"{dom} {side}: + {a[key][0]} at {a[key][1] or 'no address'}")
                elif key not in a:
                    out.append(f"{dom} {side}: - {b[key][0]} (was {b[key][1] or 'no address'})")
                elif a[key][1] != b[key][1]:
                    out.append(f"{dom} {side}: {a[key][0]} {b[key][1]} -> {a[key][1]}")
    return out


def side_present(view: DomainView, side: str) -> bool:
    if side == "live":
        return view.live is not None
    if side == "persistent":
        return view.persistent is not None
    return view.chv_info is not None
