"""What the reference rules say a command's outcome must be, checked after each step of
the property machine (beside the invariants, which check the state).

The invariants see a driver whose definitions and CHV agree; these checks see a driver
that gets there the wrong way:

- ``hotplug-slot`` (rule H1): an attach without an address, of a device neither
  definition has, takes the lowest slot free in the live and persistent definitions and
  the save images; another slot is the driver's own choice, not the rule's;
- ``id-reused``: CHV refused an id as not unique: the driver gave a new device an id
  its VM already has;
- ``device-lost``: a detach of a device that is in every definition it affects failed
  because the driver did not find it;
- ``define-refused``: the machine's domains are valid, so their define or create must
  succeed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from harness.checks.invariants import Violation
from harness.driver.allocator import free_slots
from harness.driver.records import AttachFlags
from harness.model.domain import Domain
from harness.model.virsh import Command

__all__ = ["COMMAND_RULES", "command_violations", "mark_step"]

#: the rules of this module (the invariants know none of them)
COMMAND_RULES = frozenset({"hotplug-slot", "id-reused", "device-lost", "define-refused"})

_NOT_FOUND = ("not found", "no interface name specified")
#: CHV's two refusals of an id in use: the config check, then the device manager's
_NOT_UNIQUE = re.compile(
    r"Identifier (\S+) is not unique|Invalid identifier as it is not unique: (\S+)"
)


def mark_step(step: Any, violations: Sequence[Violation]) -> None:
    """Make the recorded step say what the rule expected, so that its reproducer fails
    where the machine did: a command that had to succeed is a ``run`` step, and a slot
    the rule names an ``expect`` after it."""
    for v in violations:
        if v.rule in ("id-reused", "device-lost", "define-refused"):
            step.kind = "run"
        elif v.rule == "hotplug-slot" and v.expected:
            step.expect = f'{{device: "{v.device}", {v.side}: "{v.expected}"}}'


def _key(cmd: Command) -> tuple[str, str] | None:
    if cmd.name in ("attach-disk", "detach-disk"):
        target = cmd.get("target")
        return ("disk", target) if target else None
    if cmd.name in ("attach-interface", "detach-interface"):
        mac = cmd.get("mac")
        return ("interface", mac.lower()) if mac else None
    return None


def _label(key: tuple[str, str]) -> str:
    return f"{key[0]} {key[1]}"


def command_violations(
    cmd: Command,
    *,
    ok: bool,
    error: str,
    before: tuple[Domain | None, Domain | None],
    after: tuple[Domain | None, Domain | None],
    saved: Callable[[], Sequence[Domain]],
    active: bool,
    can_address: Any,
) -> list[Violation]:
    """The violations of one command's outcome (see the module doc). ``before``/``after``
    are (live, persistent) around the command; ``saved()`` the save images' live
    definitions (read only when an attach is judged); ``active``: the domain ran before it;
    ``can_address(kind)``: the release takes an address for that kind."""
    key = _key(cmd)
    if not ok:
        reused = _NOT_UNIQUE.search(error)
        if reused:
            return [
                Violation(
                    "id-reused",
                    _label(key) if key else cmd.name,
                    "chv",
                    "an id CHV's VM does not have",
                    reused.group(1) or reused.group(2),
                    "the driver gave a new device an id that is in use",
                )
            ]
        if cmd.name in ("define", "create"):
            return [
                Violation(
                    "define-refused",
                    cmd.text,
                    "persistent" if cmd.name == "define" else "live",
                    "a defined domain",
                    "nothing",
                    f"a valid domain was refused: {error}",
                )
            ]
        if cmd.name.startswith("detach") and key is not None:
            if not any(word in error for word in _NOT_FOUND):
                return []
            live_on, config_on = AttachFlags(**cmd.device_flags()).resolve(active)
            wanted = [d for d, on in ((before[0], live_on), (before[1], config_on)) if on]
            if wanted and all(d is not None and d.find(key) is not None for d in wanted):
                return [
                    Violation(
                        "device-lost",
                        _label(key),
                        "live" if live_on else "persistent",
                        "the device detached",
                        "the device still there",
                        f"the driver did not find a device its definition has: {error}",
                    )
                ]
        return []
    if cmd.name not in ("attach-disk", "attach-interface") or key is None:
        return []
    if cmd.get("address") or not can_address(key[0] if key[0] == "disk" else "net"):
        return []
    images = saved()
    if any(d is not None and d.find(key) is not None for d in (*before, *images)):
        return []  # a twin (also in a save image) keeps its address (rule H2)
    placed = next(
        (dev for dom in after if dom is not None and (dev := dom.find(key)) is not None),
        None,
    )
    if placed is None or placed.address is None or placed.address.domain != 0:
        return []
    free = free_slots([*before, *images], 0)
    if not free or placed.address.slot == free[0]:
        return []
    return [
        Violation(
            "hotplug-slot",
            _label(key),
            "live" if after[0] is not None and after[0].find(key) is not None else "persistent",
            f"0000:00:{free[0]:02x}.0",
            str(placed.address),
            "rule H1: the lowest slot free in both definitions and the save images",
        )
    ]
