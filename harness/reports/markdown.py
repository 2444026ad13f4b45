"""The Markdown run summary (``summary.md``): counts, scenarios, failures.

Meant for CI job summaries and merge-request comments: a counts table, one
table row per scenario, and a Failures section giving, per failed or errored
scenario, the failed step and a device / BDF / side / expected / actual table.
Text from the run is escaped so that it cannot break a table or inject HTML.
"""

from __future__ import annotations

from harness.reports.wording import (
    STATUSES,
    difference_notes,
    failure_summary,
    format_seconds,
    one_line,
    step_location,
    theme_of,
    value_text,
    violation_bdf,
    violation_note,
)
from harness.scenario.results import ERROR, FAILED, RunResult

__all__ = ["md_cell", "render_markdown"]


def md_cell(text: object) -> str:
    """``text`` made safe for one Markdown table cell (one line, no HTML, no pipes)."""
    flat = one_line("" if text is None else str(text), 500)
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return flat.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"


def render_markdown(run: RunResult) -> str:
    """The Markdown summary for ``run``."""
    counts = run.counts()
    total = len(run.scenarios)
    lines = [
        "# BDF scenario run",
        "",
        f"Target: **{md_cell(run.target)}**"
        + (f", started {md_cell(run.started)}" if run.started else "")
        + f", wall time {format_seconds(run.seconds)}. Result: **{'OK' if run.ok else 'NOT OK'}**.",
        "",
        "| " + " | ".join(STATUSES) + " | total |",
        "|" + "---:|" * (len(STATUSES) + 1),
        "| " + " | ".join(str(counts.get(st, 0)) for st in STATUSES) + f" | {total} |",
        "",
        "## Scenarios",
        "",
        "| # | Scenario | Theme | Profile | Status | Duration | First failure |",
        "|---:|---|---|---|---|---:|---|",
    ]
    for i, s in enumerate(run.scenarios, 1):
        lines.append(
            _row(
                [
                    i,
                    s.name,
                    theme_of(s),
                    s.profile,
                    s.status,
                    format_seconds(s.seconds),
                    failure_summary(s),
                ]
            )
        )
    failing = [s for s in run.scenarios if s.status in (FAILED, ERROR)]
    lines += ["", "## Failures", ""]
    if not failing:
        lines.append("None.")
    for s in failing:
        lines += [f"### {md_cell(s.name)} ({s.status})", ""]
        lines.append(
            f"File <code>{md_cell(s.file)}</code>, theme {md_cell(theme_of(s))}, "
            f"profile {md_cell(s.profile)}."
        )
        lines.append("")
        step = s.failed_step
        if step is None:
            lines += [md_cell(failure_summary(s)), ""]
            continue
        where = step_location(s.file, step)
        at = f" (<code>{md_cell(where)}</code>)" if where else ""
        lines.append(
            f"Step {step.index}{at} on {md_cell(step.host)}: "
            f"<code>{md_cell(step.text)}</code> ({step.status})"
        )
        lines.append("")
        if step.error:
            lines += [f"Error: {md_cell(step.error)}", ""]
        if step.violations:
            lines += [
                "| Device | BDF | Side | Expected | Actual | Rule | Detail |",
                "|---|---|---|---|---|---|---|",
            ]
            for v in step.violations:
                lines.append(
                    _row(
                        [
                            v.get("device") or "",
                            violation_bdf(v),
                            v.get("side") or "",
                            value_text(v.get("expected")),
                            value_text(v.get("actual")),
                            v.get("rule") or "",
                            violation_note(v),
                        ]
                    )
                )
            lines.append("")
        if step.differences:
            notes = ", ".join(difference_notes(step))
            lines += [f"Differs between sides: {md_cell(notes)}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"
