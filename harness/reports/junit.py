"""The JUnit XML run report, in the shape Jenkins and GitLab read.

One ``<testsuites>`` root holding one ``<testsuite name="bdf-scenarios">``
with the tests / failures / errors / skipped counts and the wall time; one
``<testcase classname="scenarios.<folder>" name="<scenario>">`` per scenario,
the folder being the theme's directory (``hotplug``: a stable key, where the
other reports say the theme as a phrase; dots become ``_``: CI tools read dots
as package separators).
A failed scenario carries ``<failure message="...">`` whose message is one
line naming the device, BDF and side, and whose text is the step trace; an
errored one ``<error>``; unsupported and skipped ones ``<skipped>``. Each
testcase also has the trace in ``<system-out>``. Characters XML 1.0 cannot
hold (control characters from user files or API bodies) are replaced.
"""

from __future__ import annotations

import re

from lxml import etree

from harness.reports.wording import failure_summary, step_trace, theme_dir
from harness.scenario.results import ERROR, FAILED, PASSED, SKIPPED, UNSUPPORTED, RunResult

__all__ = ["SUITE_NAME", "render_junit"]

SUITE_NAME = "bdf-scenarios"

# Characters outside XML 1.0's Char production.
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _x(text: object) -> str:
    return _BAD_XML.sub("\ufffd", "" if text is None else str(text))


def _time(seconds: float) -> str:
    return f"{max(seconds, 0.0):.3f}"


def render_junit(run: RunResult) -> str:
    """The JUnit XML document for ``run`` (UTF-8, with an XML declaration)."""
    counts = run.counts()
    tests = len(run.scenarios)
    failures = counts.get(FAILED, 0)
    errors = counts.get(ERROR, 0)
    skipped = counts.get(UNSUPPORTED, 0) + counts.get(SKIPPED, 0)
    totals = {
        "tests": str(tests),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": _time(run.seconds),
    }
    root = etree.Element("testsuites", {"name": "bdf-harness", **totals})
    suite = etree.SubElement(root, "testsuite", {"name": SUITE_NAME, **totals})
    if run.started:
        suite.set("timestamp", _x(run.started))
    props = etree.SubElement(suite, "properties")
    etree.SubElement(props, "property", name="target", value=_x(run.target))
    for s in run.scenarios:
        case = etree.SubElement(
            suite,
            "testcase",
            classname=_x(f"scenarios.{theme_dir(s).replace('.', '_')}"),
            name=_x(s.name),
            time=_time(s.seconds),
            file=_x(s.file),
        )
        trace = _x(step_trace(s))
        summary = _x(failure_summary(s))
        if s.status == FAILED:
            el = etree.SubElement(case, "failure", message=summary or "scenario failed")
            el.set("type", "BDFViolation")
            el.text = trace
        elif s.status == ERROR:
            el = etree.SubElement(case, "error", message=summary or "scenario error")
            el.set("type", "ScenarioError")
            el.text = trace
        elif s.status in (UNSUPPORTED, SKIPPED):
            reason = f"{s.status}: {summary}" if summary else s.status
            etree.SubElement(case, "skipped", message=reason)
        elif s.status != PASSED:
            el = etree.SubElement(case, "error", message=f"unknown status {s.status!r}")
            el.set("type", "UnknownStatus")
            el.text = trace
        out = etree.SubElement(case, "system-out")
        out.text = trace
    body = etree.tostring(root, encoding="unicode", pretty_print=True)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body
