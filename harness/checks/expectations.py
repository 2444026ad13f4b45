"""The ``expect:`` steps of a scenario: slot maps, single devices, states, snapshots.

Checks take a :class:`~harness.checks.view.DomainView` and the maps of earlier
``snapshot:`` steps, and return what differs, in words that name the side, the slot
and the device (``live slot 0000:00:04.0 of testvm: expected disk vdb, found empty``).
"""

from __future__ import annotations

from harness.checks.snapshot import Maps, domain_maps
from harness.checks.view import DomainView
from harness.errors import HarnessError
from harness.scenario.model import Expectation, SlotSpec
from harness.scenario.results import SlotEntry

__all__ = [
    "CheckFailed",
    "check_slots",
    "compare_maps",
    "expectation_problems",
    "pick_domain",
    "snapshot_maps",
]


class CheckFailed(HarnessError):
    """An expectation cannot be checked as written (no domain, several domains)."""


def pick_domain(host_name: str, domains: list[str], exp: Expectation) -> str:
    """The domain an expectation checks: the one it names, or the host's only one
    (``""`` for ``state: absent`` on a host without domains)."""
    if exp.domain:
        return exp.domain
    if len(domains) == 1:
        return domains[0]
    if not domains:
        if exp.state == "absent":
            return ""  # nothing there: every domain is absent
        raise CheckFailed(f"host {host_name} has no domain to check")
    raise CheckFailed(
        f"host {host_name} has several domains ({', '.join(domains)}): "
        "the expectation needs 'domain:'"
    )


def expectation_problems(
    exp: Expectation,
    view: DomainView,
    *,
    host: str,
    snapshots: dict[str, dict[str, Maps]],
    key: str,
) -> list[str]:
    """What differs from an ``expect:`` step for the domain ``view`` shows on ``host``
    (``snapshots``: the maps taken by ``snapshot:`` steps, ``key`` the domain's key in
    them). Empty when the expectation holds."""
    domain = view.name
    problems: list[str] = []
    if exp.state is not None:
        actual = view.state or "absent"
        if actual != exp.state:
            problems.append(f"domain {domain} on {host} is {actual}, expected {exp.state}")
    maps = domain_maps(view)
    for side, want in exp.sides.items():
        if exp.device is not None:
            assert isinstance(want, str)
            got = next((b for b, e in maps[side].items() if e.device == exp.device), None)
            expected = None if want == "absent" else want
            if got != expected:
                problems.append(
                    f"{exp.device}: {side} has {got or 'nothing'}, expected "
                    f"{expected or 'absent'} (domain {domain})"
                )
            continue
        if isinstance(want, list):
            problems += check_slots(side, maps[side], want, exp.exact, domain)
        elif want.startswith("same-as-"):
            other = want[len("same-as-") :]
            problems += compare_maps(side, maps[side], other, maps[other], domain)
        else:
            snap_name = want[len("snapshot ") :]
            snap = snapshot_maps(snapshots.get(snap_name, {}), key)
            if snap is None:
                problems.append(f"snapshot {snap_name} has no domain {domain} on {host}")
            else:
                problems += compare_maps(
                    side, maps[side], f"snapshot {snap_name}", snap[side], domain
                )
    return problems


def snapshot_maps(snapshot: dict[str, Maps], key: str) -> Maps | None:
    """The maps of ``key`` ("host/domain") in a snapshot, or of the same domain taken on
    another host (a migration scenario compares the destination with the source)."""
    if key in snapshot:
        return snapshot[key]
    domain = key.rsplit("/", 1)[-1]
    same = [maps for k, maps in snapshot.items() if k.rsplit("/", 1)[-1] == domain]
    return same[0] if len(same) == 1 else None


def _describe(entry: SlotEntry | None) -> str:
    return "empty" if entry is None else entry.device


def check_slots(
    side: str, actual: dict[str, SlotEntry], specs: list[SlotSpec], exact: bool, domain: str
) -> list[str]:
    out = []
    listed = set()
    for spec in specs:
        listed.add(spec.bdf)
        entry = actual.get(spec.bdf)
        if spec.value == "empty":
            ok = entry is None
        elif spec.is_class:
            ok = entry is not None and entry.cls == spec.value
        else:
            ok = entry is not None and entry.device == spec.value
        if not ok:
            out.append(
                f"{side} slot {spec.bdf} of {domain}: expected {spec.value}, found "
                f"{_describe(entry)}"
            )
    if exact:
        for bdf, entry in sorted(actual.items()):
            if bdf not in listed:
                out.append(
                    f"{side} slot {bdf} of {domain}: expected empty (exact), found {entry.device}"
                )
    return out


def compare_maps(
    side: str,
    actual: dict[str, SlotEntry],
    other_name: str,
    other: dict[str, SlotEntry],
    domain: str,
) -> list[str]:
    out = []
    for bdf in sorted(set(actual) | set(other)):
        a, b = actual.get(bdf), other.get(bdf)
        if _describe(a) != _describe(b):
            out.append(
                f"{side} slot {bdf} of {domain}: has {_describe(a)}, but {other_name} has "
                f"{_describe(b)}"
            )
    return out
