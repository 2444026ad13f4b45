"""The wording the report formats share: a scenario's theme, a violation, a first
failure, a step trace, so the HTML, JUnit and Markdown reports say the same thing."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from harness.scenario.results import (
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    UNSUPPORTED,
    ScenarioResult,
    StepResult,
)

__all__ = [
    "REPORT_FILES",
    "STATUSES",
    "failure_summary",
    "format_seconds",
    "one_line",
    "step_trace",
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


def theme_of(scenario: ScenarioResult) -> str:
    """The scenario's theme: the name of the directory holding its file.

    ``scenarios/hotplug/a1.yaml`` -> ``hotplug``; a file directly in the
    scenarios directory (or with no directory) -> ``scenarios``.
    """
    parent = PurePath(scenario.file.replace("\\", "/")).parent.name
    return parent or "scenarios"


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


def _step_label(step: StepResult) -> str:
    return f"step {step.index} `{one_line(step.text, 120)}`"


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
        if step.violations:
            return one_line(f"{_step_label(step)}: {violation_summary(step.violations[0])}")
        if step.error:
            return one_line(f"{_step_label(step)}: {step.error}")
        return one_line(f"{_step_label(step)} {step.status}")
    for st in scenario.steps:
        if st.status in (UNSUPPORTED, SKIPPED) and st.error:
            return one_line(f"{_step_label(st)}: {st.error}")
    if scenario.status in (FAILED, ERROR):
        return f"scenario {scenario.status}"
    return ""


def step_trace(scenario: ScenarioResult) -> str:
    """The scenario's steps as plain text, with errors, violations and differences."""
    lines = [
        f"scenario {scenario.name} ({scenario.file}) profile={scenario.profile} "
        f"target={scenario.target}: {scenario.status}"
    ]
    if scenario.source:
        lines.append(f"source: {scenario.source}")
    for step in scenario.steps:
        lines.append(
            f"  [{step.status}] #{step.index} {step.host}: {step.text} "
            f"({format_seconds(step.seconds)})"
        )
        if step.error:
            lines.append(f"      error: {step.error}")
        for v in step.violations:
            lines.append(f"      violation: {violation_summary(v)}")
        if step.differences:
            lines.append(f"      differs between sides: {', '.join(step.differences)}")
    return "\n".join(lines)
