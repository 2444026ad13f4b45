"""The wording the report formats share: a scenario's theme, a step's place in its
file, a violation, a first failure, what differs between the sides, a step trace, so
the HTML, JUnit and Markdown reports say the same thing."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from harness.scenario.results import (
    ERROR,
    FAILED,
    PASSED,
    SIDES,
    SKIPPED,
    UNSUPPORTED,
    ScenarioResult,
    SlotEntry,
    StepResult,
)

__all__ = [
    "REPORT_FILES",
    "STATUSES",
    "THEMES",
    "difference_notes",
    "entry_at",
    "failure_summary",
    "format_seconds",
    "norm_bdf",
    "one_line",
    "parse_difference",
    "step_location",
    "step_sides",
    "step_trace",
    "theme_dir",
    "theme_of",
    "value_text",
    "violation_bdf",
    "violation_note",
    "violation_summary",
]

#: statuses in the order the reports list them
STATUSES = (PASSED, FAILED, ERROR, UNSUPPORTED, SKIPPED)

#: report kind -> file name inside the report directory
REPORT_FILES = {
    "html": "index.html",
    "junit": "junit.xml",
    "markdown": "summary.md",
    "json": "run.json",
}

_BDF_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
#: a BDF as the runner writes it (``0000:00:04.0``), or without its segment (``00:04.0``)
_ANY_BDF_RE = re.compile(
    r"^(?:(?P<seg>[0-9a-fA-F]{1,4}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
    r"(?P<slot>[0-9a-fA-F]{1,2})\.(?P<fn>[0-7])$"
)

#: the folders of ``scenarios/`` -> the theme as the reports say it
THEMES = {
    "hotplug": "hot-plug",
    "lifecycle": "life cycle",
    "migration": "migration",
    "validation": "address validation",
    "chv-versions": "CHV releases",
}


def theme_dir(scenario: ScenarioResult) -> str:
    """The name of the directory holding the scenario's file (``scenarios`` if none).

    ``scenarios/hotplug/a1.yaml`` -> ``hotplug``: the stable key JUnit's
    ``classname`` is built from.
    """
    parent = PurePath(scenario.file.replace("\\", "/")).parent.name
    return parent or "scenarios"


def theme_of(scenario: ScenarioResult) -> str:
    """The scenario's theme as a reader says it: ``scenarios/hotplug/a1.yaml`` -> ``hot-plug``.

    The folders of ``scenarios/`` have their phrase in :data:`THEMES`; any other
    folder is its name with ``-`` and ``_`` read as spaces.
    """
    folder = theme_dir(scenario)
    return THEMES.get(folder) or " ".join(folder.replace("_", " ").replace("-", " ").split())


def step_location(file: str, step: StepResult) -> str:
    """``FILE:LINE`` of the step in its scenario file ("" when the line is not known)."""
    return f"{file}:{step.line}" if step.line > 0 and file else ""


@functools.lru_cache(maxsize=4096)  # a report has a few hundred distinct ones
def norm_bdf(text: str) -> str | None:
    """``text`` as the runner spells a BDF (``0000:00:04.0``), or None if it is not one.

    The segment may be left out (``00:04.0`` is segment 0); case does not matter.
    """
    m = _ANY_BDF_RE.match(text.strip())
    if m is None:
        return None
    seg = int(m["seg"] or "0", 16)
    return f"{seg:04x}:{int(m['bus'], 16):02x}:{int(m['slot'], 16):02x}.{m['fn']}"


def parse_difference(text: str) -> tuple[str | None, str] | None:
    """One entry of ``StepResult.differences`` as (domain key, BDF).

    The runner writes ``0000:00:04.0`` when the step saw one domain (the key is
    then None: the only one) and ``KEY 0000:00:04.0`` otherwise, KEY being the
    domain's key in the slot maps (``testvm``, ``src/testvm``). None: not a BDF.
    """
    key, _, last = text.strip().rpartition(" ")
    bdf = norm_bdf(last)
    if bdf is None:
        return None
    return (key.strip() or None), bdf


def step_sides(step: StepResult) -> list[str]:
    """The three standard sides, then any other side the runner recorded (sorted)."""
    return [*SIDES, *sorted(set(step.maps) - set(SIDES))]


def entry_at(step: StepResult, side: str, domain: str | None, bdf: str) -> SlotEntry | None:
    """What ``side`` has at ``bdf`` in domain ``domain`` (None: any domain) after the step."""
    want = norm_bdf(bdf)
    doms = step.maps.get(side, {})
    for key in doms if domain is None else [domain]:
        for at, entry in doms.get(key, {}).items():
            if norm_bdf(at) == want:
                return entry
    return None


def difference_notes(step: StepResult) -> list[str]:
    """Each BDF where the sides differ, with what every side has there.

    ``0000:00:04.0 (live: disk vdb; persistent: -; chv: disk vdb)``.
    """
    notes = []
    for text in step.differences:
        parsed = parse_difference(text)
        if parsed is None:
            notes.append(text)
            continue
        domain, bdf = parsed
        seen = []
        for side in step_sides(step):
            entry = entry_at(step, side, domain, bdf)
            seen.append(f"{side}: {entry.device if entry is not None else '-'}")
        notes.append(f"{text} ({'; '.join(seen)})")
    return notes


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed), cut at ``limit`` characters."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "\u2026"
    return flat


def value_text(value: Any) -> str:
    """How an expected/actual value of a violation reads: ``None`` is ``absent``."""
    if value is None:
        return "absent"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ", ".join(value_text(v) for v in value) or "none"
    return json.dumps(value, sort_keys=True, default=str)


def format_seconds(seconds: float) -> str:
    """A duration for people: ``0.012 s``, ``1.50 s``, ``2 min 5 s``."""
    if seconds < 1:
        return f"{seconds:.3f} s"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def violation_bdf(violation: Mapping[str, Any]) -> str:
    """The BDF a violation is about: its ``bdf`` field, else the actual or expected BDF."""
    for key in ("bdf", "actual", "expected"):
        value = violation.get(key)
        if isinstance(value, str) and _BDF_RE.match(value):
            return value
    bdf = violation.get("bdf")
    return "" if bdf is None else str(bdf)


def violation_note(violation: Mapping[str, Any]) -> str:
    """What a violation says beyond rule, device, side, expected and actual.

    Its ``detail``; else its ``message`` unless that is only the standard
    ``[rule] device: ...`` sentence repeating the other fields.
    """
    detail = violation.get("detail")
    if detail:
        return str(detail)
    message = violation.get("message")
    if not message:
        return ""
    rule = violation.get("rule")
    if rule and str(message).startswith(f"[{rule}]"):
        return ""
    return str(message)


def violation_summary(violation: Mapping[str, Any]) -> str:
    """One line naming the rule, device, BDF, side, expected and actual of a violation."""
    has_values = "expected" in violation or "actual" in violation
    if not has_values and not violation.get("device") and violation.get("message"):
        return one_line(str(violation["message"]))
    parts = []
    rule = violation.get("rule")
    if rule:
        parts.append(f"[{rule}]")
    device = violation.get("device")
    side = violation.get("side")
    where = str(device) if device else "domain"
    if side:
        where += f" on {side}"
    bdf = violation_bdf(violation)
    if bdf and bdf not in (violation.get("expected"), violation.get("actual")):
        where += f" at {bdf}"
    parts.append(where + ":")
    if has_values:
        parts.append(
            f"expected {value_text(violation.get('expected'))}, "
            f"actual {value_text(violation.get('actual'))}"
        )
    note = violation_note(violation)
    if note:
        parts.append(f"({note})")
    return one_line(" ".join(parts))


def _step_label(step: StepResult, file: str = "") -> str:
    where = step_location(file, step)
    return f"step {step.index}{f' ({where})' if where else ''} `{one_line(step.text, 120)}`"


def failure_summary(scenario: ScenarioResult) -> str:
    """One line saying what went wrong first in a scenario ("" when nothing did).

    The runner's own ``failure`` line wins; otherwise it is built from the
    failed step: its first violation (device, BDF, side, expected vs actual)
    or its error. Unsupported and skipped scenarios say why when they can.
    """
    if scenario.failure:
        return one_line(scenario.failure)
    step = scenario.failed_step
    if step is not None:
        label = _step_label(step, scenario.file)
        if step.violations:
            return one_line(f"{label}: {violation_summary(step.violations[0])}")
        if step.error:
            return one_line(f"{label}: {step.error}")
        return one_line(f"{label} {step.status}")
    for st in scenario.steps:
        if st.status in (UNSUPPORTED, SKIPPED) and st.error:
            return one_line(f"{_step_label(st, scenario.file)}: {st.error}")
    if scenario.status in (FAILED, ERROR):
        return f"scenario {scenario.status}"
    return ""


def step_trace(scenario: ScenarioResult) -> str:
    """The scenario's steps as plain text, with errors, violations and differences.

    Each step names its place in the file (``FILE:LINE``) when the run knows it.
    """
    lines = [
        f"scenario {scenario.name} ({scenario.file}) profile={scenario.profile} "
        f"target={scenario.target}: {scenario.status}"
    ]
    if scenario.source:
        lines.append(f"source: {scenario.source}")
    for step in scenario.steps:
        where = step_location(scenario.file, step)
        lines.append(
            f"  [{step.status}] #{step.index}{f' ({where})' if where else ''} {step.host}: "
            f"{step.text} ({format_seconds(step.seconds)})"
        )
        if step.error:
            lines.append(f"      error: {step.error}")
        for v in step.violations:
            lines.append(f"      violation: {violation_summary(v)}")
        if step.differences:
            lines.append(f"      differs between sides: {', '.join(difference_notes(step))}")
    return "\n".join(lines)
