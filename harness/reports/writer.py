"""Writing a run's reports: ``index.html``, ``junit.xml``, ``summary.md``, ``run.json``.

Every report is rendered (:mod:`.html`, :mod:`.junit`, :mod:`.markdown`) before any is
written; :func:`rerender` renders them again from a saved ``run.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.reports.html import render_html
from harness.reports.junit import render_junit
from harness.reports.markdown import render_markdown
from harness.reports.runjson import run_json_text
from harness.reports.wording import REPORT_FILES
from harness.scenario.results import RunResult

__all__ = ["REPORT_FILES", "rerender", "write_reports"]


def write_reports(run: RunResult, report_dir: Path) -> dict[str, Path]:
    """Write ``index.html``, ``junit.xml``, ``summary.md`` and ``run.json`` into ``report_dir``.

    Creates the directory (and its parents). Every report is rendered before
    anything is written, so a rendering error leaves no partial set of files.
    Returns report kind (``html``, ``junit``, ``markdown``, ``json``) -> path.
    """
    texts = {
        "html": render_html(run),
        "junit": render_junit(run),
        "markdown": render_markdown(run),
        "json": run_json_text(run),
    }
    report_dir = Path(report_dir)
    if report_dir.exists() and not report_dir.is_dir():
        raise NotADirectoryError(f"report directory {report_dir} exists and is not a directory")
    report_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for kind, text in texts.items():
        path = report_dir / REPORT_FILES[kind]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths[kind] = path
    return paths


def rerender(run_json: Path, report_dir: Path | None = None) -> dict[str, Path]:
    """Render the reports again from a saved ``run.json`` (into its directory by default)."""
    run_json = Path(run_json)
    try:
        data = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read run results {run_json}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"run results {run_json}: expected a JSON object")
    try:
        run = RunResult.from_json(data)
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"run results {run_json}: not a run record: {exc}") from None
    return write_reports(run, run_json.parent if report_dir is None else report_dir)
