"""The HTML report as a real browser shows it: headless Chromium at 1280x800.

A run of twenty passing scenarios and one failing scenario listed last is
rendered, then opened in Chromium twice: once for a screenshot (a real PNG of
the window with something drawn on it), once for a DOM dump, where the
report's inline script has recorded layout facts on ``<body>``. The failure
must be on screen without scrolling, and the counts the page shows must be the
run's.

Then a real run, where a live-only hot-plug leaves live and persistent apart and
the next expectation fails, is rendered with a scenario of long device names and
opened with a probe script added after the report's own: it opens every
timeline, reads the computed outline of every grid cell and where the browser
broke each device name across lines, and records them on ``<body>`` for the DOM
dump. The differing slot must be outlined on every side (and nothing else), the
difference line must name each side's device, the failed step must name its
``FILE:LINE``, and no device name may break inside a word.

Without Chromium the tests are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from lxml import html as lhtml

from harness.reports.writer import write_reports
from harness.scenario.batch import run_scenario_sync
from harness.scenario.results import (
    FAILED,
    PASSED,
    SKIPPED,
    RunResult,
    ScenarioResult,
    SlotEntry,
    StepResult,
)

WIDTH, HEIGHT = 1280, 800
BROWSER_TIMEOUT = 120
DOMAIN = Path(__file__).resolve().parents[3] / "scenarios" / "domains" / "domain-chv.xml"


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


# ----------------------------------------------------------------- differences, as drawn

#: a live-only disk, then an expectation that the persistent definition has it too
SPLIT = """\
name: transient disk expected in the persistent definition
source: tests
profiles: [v53]
documents:
  domain: {file: domain-chv.xml}
steps:
  - run: define domain
  - run: start testvm
  - run: attach-disk testvm /nfs/vdb.img vdb --live
  - expect: {device: disk vdb, persistent: 00:04.0}
"""
SPLIT_FAILING_LINE = 10

#: names wider than a grid cell, with and without separators to break at
LONG_NAMES = {
    "0000:00:01.0": SlotEntry("rng implicit-rng-device", "rng"),
    "0000:00:02.0": SlotEntry("interface 52:54:00:e5:b8:02", "interface"),
    "0000:00:03.0": SlotEntry("watchdog watchdog0", "watchdog"),
    "0000:00:04.0": SlotEntry("memballoon balloon0", "memballoon"),
    "0000:00:05.0": SlotEntry("filesystem share_with_a_long_name", "filesystem"),
    "0000:00:06.0": SlotEntry("CHV device _net2", "unknown"),
    "0000:00:07.0": SlotEntry("console console0", "console"),
}

#: run after the report's script: facts a DOM dump cannot show, recorded on <body>
PROBE = """
(function(){
var b=document.body;
document.querySelectorAll('details').forEach(function(d){d.open=true;});
var outlined=[];
document.querySelectorAll('.grid .cell').forEach(function(c){
  var s=getComputedStyle(c);
  if(s.outlineStyle==='none'||parseFloat(s.outlineWidth)<=0)return;
  var seg=c.closest('.segment'),side=c.closest('.side-map'),step=c.closest('.step');
  outlined.push([step.id,seg.getAttribute('data-domain'),seg.getAttribute('data-segment'),
    side.getAttribute('data-side'),c.getAttribute('data-slot'),s.outlineColor].join('|'));
});
var sep=/[\\s:\\-_.\\/@,=]/,broken=[],lines=0;
document.querySelectorAll('.grid .dev').forEach(function(dev){
  var chars=[],top=null,w=document.createTreeWalker(dev,NodeFilter.SHOW_TEXT),n;
  while((n=w.nextNode())){for(var i=0;i<n.data.length;i++){
    var r=document.createRange();r.setStart(n,i);r.setEnd(n,i+1);
    var rects=r.getClientRects();if(rects.length)top=rects[0].top;
    chars.push([n.data[i],top]);}}
  for(var i=1;i<chars.length;i++){
    if(chars[i][1]>chars[i-1][1]+1){lines++;
      if(!sep.test(chars[i-1][0]))broken.push(dev.textContent+' after '+
        JSON.stringify(dev.textContent.slice(0,i)));}}
});
b.setAttribute('data-probe-outlined',JSON.stringify(outlined));
b.setAttribute('data-probe-line-breaks',String(lines));
b.setAttribute('data-probe-mid-word',JSON.stringify(broken));
b.setAttribute('data-probe','done');
})();
"""


def _long_names() -> ScenarioResult:
    maps = {side: {"testvm": dict(LONG_NAMES)} for side in ("live", "persistent", "chv")}
    return ScenarioResult(
        name="long device names",
        file="scenarios/hotplug/long-names.yaml",
        status=PASSED,
        steps=[StepResult(index=1, text="start testvm", maps=maps, line=7)],
    )


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScenarioResult, lhtml.HtmlElement]:
    """The split run and the long names, reported, probed in Chromium: (result, DOM)."""
    base = tmp_path_factory.mktemp("split")
    folder = base / "hotplug"
    folder.mkdir()
    (folder / "domain-chv.xml").write_text(DOMAIN.read_text())
    path = folder / "split.yaml"
    path.write_text(SPLIT)
    (result,) = run_scenario_sync(path)
    run = RunResult(scenarios=[result, _long_names()], target="reference", seconds=1.0)
    index = write_reports(run, base / "report")["html"]
    page = index.read_text(encoding="utf-8")
    probe_page = index.with_name("probe.html")
    probe_page.write_text(page.replace("</body>", f"<script>{PROBE}</script></body>"))
    proc = _run_browser(["--dump-dom", probe_page.as_uri()], base / "profile")
    doc = lhtml.fromstring(proc.stdout.decode("utf-8"))
    body = doc.find("body")
    assert body is not None and body.get("data-probe") == "done", "the probe did not run"
    return result, doc


def test_the_split_run_is_what_the_browser_checks_need(
    probed: tuple[ScenarioResult, lhtml.HtmlElement],
) -> None:
    result, _ = probed
    assert result.status == FAILED, result.failure
    failed = result.steps[3]
    assert (failed.status, failed.line) == (FAILED, SPLIT_FAILING_LINE)
    assert failed.differences == ["0000:00:04.0"]
    assert list(failed.maps["live"]) == ["testvm"]  # keyed by domain, not by segment


def test_differing_cells_are_outlined_and_nothing_else(
    probed: tuple[ScenarioResult, lhtml.HtmlElement],
) -> None:
    _, doc = probed
    outlined = json.loads(doc.find("body").get("data-probe-outlined"))
    red = "rgb(213, 0, 0)"
    # after the live-only attach (step 3) and the failed expectation (step 4): slot 04
    # differs, outlined on every side; no other cell of any step is outlined
    assert sorted(outlined) == sorted(
        f"scn-1-step-{step}|testvm|0000|{side}|04|{red}"
        for step in (3, 4)
        for side in ("live", "persistent", "chv")
    )


def test_difference_line_names_each_sides_device(
    probed: tuple[ScenarioResult, lhtml.HtmlElement],
) -> None:
    _, doc = probed
    want = "differs between sides: 0000:00:04.0 (live: disk vdb; persistent: -; chv: disk vdb)"
    step = doc.get_element_by_id("scn-1-step-4")
    assert step.find_class("diffs")[0].text_content() == want
    (failure,) = doc.get_element_by_id("failures").find_class("failure")
    assert failure.find_class("diffs")[0].text_content() == want
    # the grids say which domain and which PCI segment they show
    (segment,) = step.find_class("segment")
    assert segment.get("data-domain") == "testvm" and segment.get("data-segment") == "0000"
    assert segment.find("h4").text_content() == "testvm \u00b7 PCI segment 0000"


def test_failed_step_names_its_file_and_line(
    probed: tuple[ScenarioResult, lhtml.HtmlElement],
) -> None:
    result, doc = probed
    where = f"{result.file}:{SPLIT_FAILING_LINE}"
    step = doc.get_element_by_id("scn-1-step-4")
    assert step.get("data-where") == where
    assert where in step.find_class("step-head")[0].text_content()
    (failure,) = doc.get_element_by_id("failures").find_class("failure")
    assert where in failure.find_class("why")[0].text_content()
    # and the theme reads as a phrase
    row = doc.get_element_by_id("scenarios").find_class("scenario")[0]
    assert row.find_class("theme")[0].text_content() == "hot-plug"


def test_device_names_break_only_between_words(
    probed: tuple[ScenarioResult, lhtml.HtmlElement],
) -> None:
    _, doc = probed
    body = doc.find("body")
    assert json.loads(body.get("data-probe-mid-word")) == []
    # the long names do wrap (at spaces and separators): the check saw line breaks
    assert int(body.get("data-probe-line-breaks")) >= len(LONG_NAMES)
