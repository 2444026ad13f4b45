"""Comparing the two sides of a sequence run, exchange by exchange.

After :mod:`harness.differential.normalise`, each step's two :class:`Observed` values
are compared: how many answers came, each answer's status line, its header names in
order and their values, its body (JSON structurally, with the order of an object's
keys, which serde gives a struct; text as it is), whether the server closed the
connection, whether the process ended and how, and what a wait found. Then the event
monitor's records and the exit statuses.

For ``vm.info`` the PCI parts are told apart (:data:`PCI`): the config's device lists
(``id``, ``pci_segment``, ``pci_device_id``) and the ``device_tree`` (nodes, ``parent``,
``children``, ``pci_bdf``); a difference there is a ``pci`` difference, any other a
``body`` difference.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from harness.differential.normalise import (
    Observed,
    cut_at,
    known_gap,
    lost_at_exit,
    observe,
    observe_events,
)
from harness.differential.normalise import requested_macs as _requested_macs
from harness.differential.runner import SequenceRun
from harness.differential.sides import FAKE, REAL, exit_text

__all__ = [
    "PCI",
    "Difference",
    "Exchange",
    "compare_json",
    "compare_observed",
    "compare_run",
]

#: the paths of vm.info whose differences are PCI differences
_DEVICE_KEYS = (
    "disks|net|fs|pmem|devices|user_devices|vdpa|generic_vhost_user|vsock|rng|console"
    "|balloon|rtc|ivshmem"
)
PCI = re.compile(
    r"^\$\.device_tree(\.[^.\[]+(\.(parent|children|pci_bdf|id)(\[\d+\])?)?)?$"
    rf"|^\$\.config\.({_DEVICE_KEYS})(\[\d+\])?(\.(id|pci_segment|pci_device_id))?$"
)
#: the most differences kept per exchange (the rest are counted)
MAX_PER_EXCHANGE = 12


@dataclass(frozen=True)
class Difference:
    """One way the two sides differ."""

    kind: str  # answers, status, headers, body, pci, connection, exit, outcome, events
    where: str  # "$.config.disks[0].image_type", "header 2", "event 4", ...
    fake: str
    real: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "fake": self.fake, "real": self.real}


@dataclass
class Exchange:
    """One compared step: what was sent, what each side did (normalised), how they differ."""

    index: int
    request: str
    implicit: bool
    fake: Observed
    real: Observed
    differences: list[Difference]
    dropped: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.index,
            "request": self.request,
            "implicit": self.implicit,
            "fake": _observed_json(self.fake),
            "real": _observed_json(self.real),
            "differences": [d.to_json() for d in self.differences],
            "more_differences": self.dropped,
        }


def _observed_json(o: Observed) -> dict[str, Any]:
    return {"answers": o.answers, "closed": o.closed, "exit": o.exit, "outcome": o.outcome}


def _show(value: Any, limit: int = 300) -> str:
    if value is _MISSING:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Missing:
    pass


_MISSING = _Missing()


def compare_json(fake: Any, real: Any, path: str = "$") -> list[tuple[str, Any, Any]]:
    """Where two JSON values differ: ``(path, fake, real)``; an object's keys are
    compared as a set, then their order."""
    if isinstance(fake, dict) and isinstance(real, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in list(fake) + [k for k in real if k not in fake]:
            sub = f"{path}.{key}"
            if key not in real:
                out.append((sub, fake[key], _MISSING))
            elif key not in fake:
                out.append((sub, _MISSING, real[key]))
            else:
                out += compare_json(fake[key], real[key], sub)
        common_fake = [k for k in fake if k in real]
        common_real = [k for k in real if k in fake]
        if not out and common_fake != common_real:
            out.append((f"{path} (key order)", common_fake, common_real))
        return out
    if isinstance(fake, list) and isinstance(real, list):
        out = []
        for i in range(max(len(fake), len(real))):
            sub = f"{path}[{i}]"
            if i >= len(real):
                out.append((sub, fake[i], _MISSING))
            elif i >= len(fake):
                out.append((sub, _MISSING, real[i]))
            else:
                out += compare_json(fake[i], real[i], sub)
        return out
    if type(fake) is not type(real) or fake != real:
        return [(path, fake, real)]
    return []


def _answer_diffs(
    i: int, fake: dict[str, Any], real: dict[str, Any], endpoint: str
) -> list[Difference]:
    at = f"answer {i + 1}: " if i else ""
    out: list[Difference] = []
    if fake["status_line"] != real["status_line"]:
        out.append(
            Difference("status", at + "status line", fake["status_line"], real["status_line"])
        )
    names_f = [n for n, _ in fake["headers"]]
    names_r = [n for n, _ in real["headers"]]
    if names_f != names_r:
        out.append(
            Difference("headers", at + "header names", ", ".join(names_f), ", ".join(names_r))
        )
    else:
        for (name, vf), (_n, vr) in zip(fake["headers"], real["headers"], strict=True):
            if vf != vr:
                out.append(Difference("headers", f"{at}header {name}", vf, vr))
    if fake["json"] and real["json"]:
        for where, vf, vr in compare_json(fake["body"], real["body"]):
            kind = "pci" if endpoint == "vm.info" and PCI.match(where.split(" ")[0]) else "body"
            out.append(Difference(kind, at + where, _show(vf), _show(vr)))
    elif fake["body"] != real["body"] or fake["json"] != real["json"]:
        out.append(Difference("body", at + "body", _show(fake["body"]), _show(real["body"])))
    return out


def compare_observed(fake: Observed, real: Observed, endpoint: str = "") -> list[Difference]:
    """Every difference between two sides' normalised results of one step."""
    out: list[Difference] = []
    if len(fake.answers) != len(real.answers):
        out.append(
            Difference(
                "answers",
                "number of answers",
                f"{len(fake.answers)}: {_show([a['status_line'] for a in fake.answers])}",
                f"{len(real.answers)}: {_show([a['status_line'] for a in real.answers])}",
            )
        )
    for i, (af, ar) in enumerate(zip(fake.answers, real.answers, strict=False)):
        out += _answer_diffs(i, af, ar, endpoint)
    if fake.closed != real.closed:
        closed = {True: "closed the connection", False: "kept the connection"}
        out.append(Difference("connection", "connection", closed[fake.closed], closed[real.closed]))
    if fake.exit != real.exit:
        out.append(Difference("exit", "process", fake.exit, real.exit))
    if fake.outcome != real.outcome:
        out.append(Difference("outcome", "outcome", fake.outcome or "-", real.outcome or "-"))
    return out


def _event_text(event: dict[str, Any]) -> str:
    props = event.get("properties")
    extra = f" {json.dumps(props, sort_keys=True)}" if props else ""
    return f"{event.get('source')}:{event.get('event')}{extra}"


def compare_events(fake: list[dict[str, Any]], real: list[dict[str, Any]]) -> list[Difference]:
    """The first place the two event lists part, with what each side has from there."""
    for i in range(max(len(fake), len(real))):
        ef = fake[i] if i < len(fake) else None
        er = real[i] if i < len(real) else None
        if ef != er:
            return [
                Difference(
                    "events",
                    f"event {i + 1} of {len(fake)} (fake) / {len(real)} (real)",
                    ", ".join(_event_text(e) for e in fake[i : i + 4]) or "(none)",
                    ", ".join(_event_text(e) for e in real[i : i + 4]) or "(none)",
                )
            ]
    return []


@dataclass
class RunComparison:
    """A sequence run compared: its exchanges, the event and exit differences."""

    run: SequenceRun
    exchanges: list[Exchange]
    events: list[Difference]
    exits: list[Difference]
    #: the step from which nothing was compared (this host's limits), if any
    cut: int | None
    #: the known gap (:data:`harness.differential.normalise.KNOWN_GAPS`) that cut it
    gap: str | None = None

    @property
    def differences(self) -> int:
        return (
            sum(len(e.differences) + e.dropped for e in self.exchanges)
            + len(self.events)
            + len(self.exits)
        )


def compare_run(run: SequenceRun) -> RunComparison:
    """Compare every step of ``run`` (up to this host's cut), its events and exits."""
    cut = cut_at(run)
    gap = known_gap(run)
    if gap is not None and (cut is None or gap[0] < cut):
        cut, gap_name = gap
    else:
        gap_name = None
    macs = _requested_macs(run)
    exchanges = []
    for step in run.steps:
        if cut is not None and step.index >= cut:
            break
        fake = observe(run, step, FAKE, macs)
        real = observe(run, step, REAL, macs)
        diffs = compare_observed(fake, real, step.step.endpoint)
        exchanges.append(
            Exchange(
                step.index,
                step.step.describe(),
                step.implicit,
                fake,
                real,
                diffs[:MAX_PER_EXCHANGE],
                max(0, len(diffs) - MAX_PER_EXCHANGE),
            )
        )
    events: list[Difference] = []
    exits: list[Difference] = []
    if cut is None and run.error is None:
        ef, er = run.exits.get(FAKE), run.exits.get(REAL)
        real_events = observe_events(run, REAL)
        fake_events = lost_at_exit(observe_events(run, FAKE), real_events, er is not None)
        events = compare_events(fake_events, real_events)
        if exit_text(ef) != exit_text(er):
            exits.append(Difference("exit", "exit status at the end", exit_text(ef), exit_text(er)))
    return RunComparison(run, exchanges, events, exits, cut, gap_name)
