"""The HTML report as a real browser shows it: headless Chromium at 1280x800.

A run of twenty passing scenarios and one failing scenario listed last is
rendered, then opened in Chromium twice: once for a screenshot (a real PNG of
the window with something drawn on it), once for a DOM dump, where the
report's inline script has recorded layout facts on ``<body>``. The failure
must be on screen without scrolling, and the counts the page shows must be the
run's. Without Chromium the tests are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from lxml import html as lhtml

from harness.reports.writer import write_reports
from harness.scenario.results import (
    FAILED,
    SKIPPED,
    RunResult,
    ScenarioResult,
    SlotEntry,
    StepResult,
)

WIDTH, HEIGHT = 1280, 800
BROWSER_TIMEOUT = 120


def _chromium() -> str:
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )
    if path is None:
        reason = "chromium is not installed (Debian package 'chromium', /usr/bin/chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install it")
        pytest.skip(reason)
    return path


def _run_browser(args: list[str], profile: Path) -> subprocess.CompletedProcess[bytes]:
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        *args,
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, timeout=BROWSER_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT} s: {exc.cmd}")
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-2000:]
    return proc


def _maps(extra: dict[str, SlotEntry]) -> dict[str, dict[str, SlotEntry]]:
    slots = {
        "0000:00:01.0": SlotEntry("rng", "rng"),
        "0000:00:02.0": SlotEntry("interface tap1", "interface"),
        "0000:00:03.0": SlotEntry("disk vda", "disk"),
    }
    return {"0000": {**slots, **extra}}


def _passing(i: int) -> ScenarioResult:
    vdb = {"0000:00:04.0": SlotEntry("disk vdb", "disk")}
    steps = [
        StepResult(index=1, text="start testvm", maps={s: _maps({}) for s in ("live", "chv")}),
        StepResult(
            index=2,
            text="attach-disk testvm --target vdb",
            maps={s: _maps(vdb) for s in ("live", "chv")},
        ),
    ]
    return ScenarioResult(
        name=f"pass-{i:02d}", file=f"scenarios/theme{i % 3}/p{i}.yaml", steps=steps, seconds=0.2
    )


def _failing() -> ScenarioResult:
    vdb = SlotEntry("disk vdb", "disk")
    bad = StepResult(
        index=2,
        text="attach-disk testvm --target vdb --persistent",
        status=FAILED,
        error="disk vdb: live 0000:00:05.0, persistent 0000:00:04.0",
        maps={
            "live": _maps({"0000:00:05.0": vdb}),
            "persistent": _maps({"0000:00:04.0": vdb}),
            "chv": _maps({"0000:00:05.0": SlotEntry("CHV device _disk2", "unknown")}),
        },
        differences=["0000:00:04.0", "0000:00:05.0"],
        violations=[
            {
                "rule": "in-sync",
                "device": "disk vdb",
                "side": "persistent",
                "expected": "0000:00:05.0",
                "actual": "0000:00:04.0",
                "detail": "",
                "message": "live and persistent disagree",
            },
            {
                "rule": "expect",
                "device": "disk vdb",
                "side": "live",
                "expected": "0000:00:04.0",
                "actual": "0000:00:05.0",
                "detail": "",
                "message": "lowest free slot not used",
            },
        ],
    )
    return ScenarioResult(
        name="zz-last-failing",
        file="scenarios/hotplug/last.yaml",
        profile="v52",
        status=FAILED,
        steps=[
            StepResult(index=1, text="start testvm", maps={s: _maps({}) for s in ("live", "chv")}),
            bad,
            StepResult(index=3, text="destroy testvm", status=SKIPPED),
        ],
        seconds=0.4,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Path]:
    run = RunResult(
        scenarios=[*(_passing(i) for i in range(20)), _failing()],
        target="reference",
        started="2026-11-24T20:00:00Z",
        seconds=4.5,
    )
    paths = write_reports(run, tmp_path_factory.mktemp("report"))
    return run, paths["html"]


def _png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the image data) of an 8-bit PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    return width, height, len(set(zlib.decompress(idat)))


def test_screenshot_is_a_drawn_png(report: tuple[RunResult, Path], tmp_path: Path) -> None:
    _, index = report
    shot = tmp_path / "shot.png"
    _run_browser([f"--screenshot={shot}", index.as_uri()], tmp_path / "profile")
    data = shot.read_bytes()
    assert len(data) > 0
    width, height, distinct = _png_facts(data)
    assert (width, height) == (WIDTH, HEIGHT)
    # a blank page compresses to a handful of byte values; text, tables and colours do not
    assert distinct > 64


def test_dom_shows_counts_and_the_failure_without_scrolling(
    report: tuple[RunResult, Path], tmp_path: Path
) -> None:
    run, index = report
    proc = _run_browser(["--dump-dom", index.as_uri()], tmp_path / "profile")
    doc = lhtml.fromstring(proc.stdout.decode("utf-8"))
    body = doc.find("body")
    assert body is not None
    assert body.get("data-layout") == "done", "the report's layout script did not run"

    summary = doc.get_element_by_id("summary")
    counts = run.counts()
    for status, n in counts.items():
        assert summary.get(f"data-count-{status}") == str(n)
        assert summary.find_class(f"count-{status}")[0].text_content().strip() == str(n)
    assert summary.get("data-count-total") == str(len(run.scenarios)) == "21"

    # the one failure, listed last in the run, is rendered at the top of the page
    assert body.get("data-failure-rows") == "1"
    assert body.get("data-violation-rows") == "2"
    (failure,) = doc.get_element_by_id("failures").find_class("failure")
    assert failure.get("data-scenario") == "zz-last-failing"
    viewport_h = int(body.get("data-viewport-height", "0"))
    viewport_w = int(body.get("data-viewport-width", "0"))
    assert 0 < viewport_h <= HEIGHT and 0 < viewport_w <= WIDTH
    top = int(body.get("data-first-failure-top", "-1"))
    bottom = int(body.get("data-first-failure-bottom", "-1"))
    assert 0 <= top < viewport_h
    assert top < bottom <= viewport_h, "the whole first failure fits in the window"
    assert int(body.get("data-summary-top", "-1")) < top
    # nothing forces horizontal scrolling at 1280 px
    assert int(body.get("data-doc-width", "0")) <= viewport_w

    # its timeline is open, the passing ones are not
    timelines = doc.find_class("timeline")
    assert [t.get("data-scenario") for t in timelines if t.get("open") is not None] == [
        "zz-last-failing"
    ]
