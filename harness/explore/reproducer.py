"""Turn a recorded step list into a scenario file, and replay such a file.

:func:`write_reproducer` writes the steps of a :class:`~harness.explore.trace.Trace` (usually the
shrunk failing example of a property test) as a scenario in the format of
``docs/scenario-format.md``: the documents the steps use, ``run:`` for steps that
succeeded, ``fail:`` for steps the driver refused, ``fault:`` for injected CHV faults.
The invariant that broke is named in the description; the scenario itself declares no
expected violation, so running it fails at the same step for the same reason.

:func:`replay` runs such a file through the scenario runner and returns the first failing
step and the invariant rules it names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.explore.trace import Trace

__all__ = ["Replay", "replay", "scenario_text", "write_reproducer"]


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def _block(text: str, indent: str) -> str:
    lines = text.rstrip("\n").split("\n")
    return "|\n" + "".join(f"{indent}{line}\n" if line else "\n" for line in lines)


def scenario_text(trace: Trace, *, name: str | None = None) -> str:
    """The scenario file (YAML text) for ``trace``."""
    rules = ", ".join(trace.rules) or "none"
    title = name or f"property-test reproducer ({trace.profile}): {rules}"
    failure = trace.failure or "no failure recorded"
    used: set[str] = set()
    for step in trace.steps:
        for doc in trace.documents:
            if re.search(rf"(^|\s){re.escape(doc)}(\s|$)", step.text):
                used.add(doc)
    out = [
        f"name: {_q(title)}",
        f"source: {_q('harness.explore.machine property test, shrunk by hypothesis')}",
        "description: " + _block(failure, "  "),
        f"profile: {trace.profile}",
    ]
    if len(trace.hosts) > 1:
        out.append(f"hosts: [{', '.join(trace.hosts)}]")
    if trace.eject != "immediate":
        out.append(f"eject: {trace.eject}")
    requires = []
    if any(
        s.kind == "run" or s.kind == "fail" for s in trace.steps if s.text.startswith("migrate")
    ):
        requires.append("migration")
    if any(s.kind == "fault" for s in trace.steps):
        requires.append("faults")
    if requires:
        out.append(f"requires: [{', '.join(requires)}]")
    out.append("tags: [property, reproducer]")
    if used:
        out.append("documents:")
        for doc in sorted(used):
            out.append(f"  {doc}: " + _block(trace.documents[doc], "    ").rstrip("\n"))
    out.append("steps:")
    for index, step in enumerate(trace.steps):
        mark = "  # the invariant breaks after this step" if index == trace.failed_step else ""
        if step.kind in ("run", "fail"):
            out.append(f"  - {step.kind}: {_q(step.text)}{mark}")
            if step.violations:
                out.append(f"    violations: [{', '.join(step.violations)}]")
            if step.host and step.host != trace.hosts[0]:
                out.append(f"    host: {step.host}")
            if step.expect:
                out.append(f"  - expect: {step.expect}")
        elif step.kind == "fault":
            assert step.fault is not None
            items = ", ".join(
                f"{k}: {_q(v) if isinstance(v, str) else v}" for k, v in step.fault.items()
            )
            out.append(f"  - fault: {{{items}}}{mark}")
            if step.host and step.host != trace.hosts[0]:
                out.append(f"    host: {step.host}")
        else:
            raise ValueError(f"step kind {step.kind!r} has no scenario form: {step.text}")
    return "\n".join(out) + "\n"


def write_reproducer(trace: Trace, report_dir: Path, *, name: str | None = None) -> Path:
    """Write ``trace`` as a scenario file under ``report_dir``; returns its path."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    rule = (trace.rules or ["error"])[0]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    path = report_dir / f"repro-{trace.profile}-{rule}-{stamp}.yaml"
    path.write_text(scenario_text(trace, name=name), encoding="utf-8")
    return path


@dataclass
class Replay:
    """The outcome of replaying a scenario file."""

    status: str
    failed_step: int | None = None  # 1-based index of the first failing step
    step_text: str = ""
    rules: list[str] = field(default_factory=list)
    failure: str = ""


def replay(path: Path | str, *, profile: str | None = None) -> Replay:
    """Run the scenario file through the scenario runner (in process)."""
    from harness.scenario.batch import run_scenario_sync

    results = run_scenario_sync(path, profile)
    result = results[0]
    out = Replay(result.status, failure=result.failure or "")
    for step in result.steps:
        if step.status not in ("passed", "skipped"):
            out.failed_step = step.index
            out.step_text = step.text
            out.rules = sorted({str(v["rule"]) for v in step.violations})
            break
    return out
