"""The HTML, JUnit and Markdown run reports rendered from hand-built run records."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from lxml import etree
from lxml import html as lhtml

from harness.reports.html import render_html
from harness.reports.junit import render_junit
from harness.reports.markdown import md_cell, render_markdown
from harness.reports.wording import (
    THEMES,
    difference_notes,
    failure_summary,
    step_trace,
    theme_dir,
    theme_of,
    violation_summary,
)
from harness.reports.writer import rerender, write_reports
from harness.scenario.results import (
    ERROR,
    FAILED,
    PASSED,
    SIDES,
    SKIPPED,
    UNSUPPORTED,
    RunResult,
    ScenarioResult,
    SlotEntry,
    StepResult,
)

EVIL = "<script>alert(1)</script>"
ROOT = Path(__file__).resolve().parents[3]


def _base_map(extra: dict[str, SlotEntry] | None = None) -> dict[str, dict[str, SlotEntry]]:
    slots = {
        "0000:00:01.0": SlotEntry("rng", "rng", "rng0"),
        "0000:00:02.0": SlotEntry("interface tap1", "interface", "net0"),
        "0000:00:03.0": SlotEntry("disk vda", "disk", "virtio-disk0"),
    }
    slots.update(extra or {})
    return {"testvm": slots}  # keyed as the runner keys them: by domain


def passing_scenario(name: str = "a3-destroy-start", file: str = "scenarios/lifecycle/a3.yaml"):
    define = StepResult(
        index=1,
        line=9,
        text="define testvm",
        maps={"persistent": _base_map()},
        changes=["persistent: assigned 0000:00:03.0 to disk vda"],
        seconds=0.01,
    )
    start = StepResult(
        index=2,
        line=10,
        text="start testvm",
        maps={side: _base_map() for side in ("live", "persistent", "chv")},
        exchanges=[
            {
                "method": "PUT",
                "endpoint": "vm.create",
                "request": {"disks": [{"path": "/nfs/nixos.img", "pci_segment": 0}]},
                "status": 204,
                "response": None,
                "seconds": 0.002,
            },
            {
                "method": "PUT",
                "endpoint": "vm.boot",
                "request": None,
                "status": 204,
                "response": "",
                "seconds": 0.001,
            },
        ],
        seconds=0.02,
    )
    return ScenarioResult(
        name=name,
        file=file,
        source="libvirt-tests testsuite_default.py",
        profile="v53",
        steps=[define, start],
        seconds=0.03,
    )


def failing_scenario() -> ScenarioResult:
    vdb_live = SlotEntry("disk vdb", "disk", "ua-vdb")
    chv_only = SlotEntry(f"CHV device {EVIL}", "unknown", None)
    ok = StepResult(
        index=1,
        line=11,
        text="start testvm",
        maps={side: _base_map() for side in ("live", "persistent", "chv")},
    )
    bad = StepResult(
        index=2,
        line=12,
        text="attach-disk testvm --target vdb --persistent",
        status=FAILED,
        error="disk vdb: live has 0000:00:05.0 but persistent has 0000:00:04.0",
        maps={
            "live": _base_map({"0000:00:05.0": vdb_live}),
            "persistent": _base_map({"0000:00:04.0": vdb_live}),
            "chv": _base_map({"0000:00:05.0": chv_only}),
        },
        differences=["0000:00:04.0", "0000:00:05.0"],
        violations=[
            {
                "rule": "in-sync",
                "device": "disk vdb",
                "side": "persistent",
                "expected": "0000:00:05.0",
                "actual": "0000:00:04.0",
                "detail": "live and persistent disagree",
                "message": "disk vdb is at different BDFs in live and persistent",
            },
            {
                "rule": "expect",
                "device": EVIL,
                "side": "chv",
                "expected": None,
                "actual": "0000:00:05.0",
                "detail": "",
                "message": "unexpected device",
            },
        ],
        exchanges=[
            {
                "method": "PUT",
                "endpoint": "vm.add-disk",
                "request": {"path": "/nfs/vdb.img", "id": EVIL},
                "status": 200,
                "response": {"id": "_disk2", "bdf": "0000:00:05.0"},
                "seconds": 0.003,
            }
        ],
        changes=["live: added disk vdb at 0000:00:05.0", "persistent: added disk vdb"],
    )
    skipped = StepResult(index=3, line=14, text="destroy testvm", status=SKIPPED)
    return ScenarioResult(
        name="a1-implicit-reuse",
        file="scenarios/hotplug/a1.yaml",
        source="libvirt-tests testsuite_live_migration.py::test_bdf_implicit_assignment",
        profile="v52",
        status=FAILED,
        steps=[ok, bad, skipped],
        seconds=0.5,
    )


def unsupported_scenario() -> ScenarioResult:
    return ScenarioResult(
        name="hotplug-on-v51",
        file="scenarios/hotplug/old.yaml",
        profile="v51",
        status=UNSUPPORTED,
        steps=[
            StepResult(
                index=1,
                text="attach-device testvm nic.xml",
                status=UNSUPPORTED,
                error="profile v51 cannot hot-plug a vdpa device",
            )
        ],
        seconds=0.1,
    )


def error_scenario() -> ScenarioResult:
    return ScenarioResult(
        name="broken-file",
        file="broken.yaml",
        status=ERROR,
        failure="broken.yaml: line 3: unknown step 'atach-disk'",
        steps=[],
    )


@pytest.fixture
def run() -> RunResult:
    return RunResult(
        scenarios=[passing_scenario(), failing_scenario(), unsupported_scenario()],
        target="reference",
        started="2026-11-24T20:00:00Z",
        seconds=1.25,
    )


# ----------------------------------------------------------------- helpers


def test_theme_is_a_phrase_for_the_folder_of_the_scenario_file() -> None:
    assert theme_of(passing_scenario()) == "life cycle"
    assert theme_of(failing_scenario()) == "hot-plug"
    assert theme_of(error_scenario()) == "scenarios"
    assert theme_of(passing_scenario(file="scenarios/chv-versions/v52.yaml")) == "CHV releases"
    assert theme_of(passing_scenario(file="scenarios/validation/x.yaml")) == "address validation"
    assert theme_of(passing_scenario(file="/tmp/x/new-theme_here/x.yaml")) == "new theme here"
    # the folder itself stays the key (JUnit's classname)
    assert theme_dir(passing_scenario()) == "lifecycle"
    assert theme_dir(error_scenario()) == "scenarios"


def test_every_scenario_folder_has_a_theme_phrase() -> None:
    folders = {p.parent.name for p in (ROOT / "scenarios").rglob("*.yaml")}
    assert folders and folders <= set(THEMES), folders - set(THEMES)


def test_failure_summary_names_device_bdf_and_side() -> None:
    line = failure_summary(failing_scenario())
    assert "step 2" in line and "attach-disk testvm --target vdb" in line
    assert "disk vdb" in line and "persistent" in line
    assert "0000:00:04.0" in line and "0000:00:05.0" in line
    assert "\n" not in line
    assert failure_summary(passing_scenario()) == ""
    assert "v51 cannot hot-plug" in failure_summary(unsupported_scenario())
    # the runner's own line wins
    assert failure_summary(error_scenario()) == "broken.yaml: line 3: unknown step 'atach-disk'"


def test_violation_summary_says_absent_for_a_missing_value() -> None:
    v = failing_scenario().steps[1].violations[1]
    text = violation_summary(v)
    assert "expected absent, actual 0000:00:05.0" in text
    assert "on chv" in text


# ----------------------------------------------------------------- HTML


def test_html_summary_counts(run: RunResult) -> None:
    doc = lhtml.fromstring(render_html(run))
    summary = doc.get_element_by_id("summary")
    assert summary.get("data-count-passed") == "1"
    assert summary.get("data-count-failed") == "1"
    assert summary.get("data-count-unsupported") == "1"
    assert summary.get("data-count-error") == "0"
    assert summary.get("data-count-skipped") == "0"
    assert summary.get("data-count-total") == "3"
    assert summary.find_class("count-failed")[0].text_content() == "1"
    text = summary.text_content()
    assert "reference" in text and "1.25 s" in text


def test_html_failures_box_shows_device_bdf_side_expected_actual(run: RunResult) -> None:
    doc = lhtml.fromstring(render_html(run))
    box = doc.get_element_by_id("failures")
    failures = box.find_class("failure")
    assert [f.get("data-scenario") for f in failures] == ["a1-implicit-reuse"]
    rows = box.find_class("violation")
    assert len(rows) == 2
    cells = {td.get("class"): td.text_content() for td in rows[0].iter("td")}
    assert cells["device"] == "disk vdb"
    assert cells["side"] == "persistent"
    assert cells["bdf"] == "0000:00:04.0"
    assert cells["exp"] == "0000:00:05.0"
    assert cells["act"] == "0000:00:04.0"
    second = {td.get("class"): td.text_content() for td in rows[1].iter("td")}
    assert second["device"] == EVIL  # shown as text, not markup
    assert second["exp"] == "absent"
    why = box.find_class("why")[0].text_content()
    assert "attach-disk testvm --target vdb --persistent" in why


def test_html_scenario_table_rows(run: RunResult) -> None:
    doc = lhtml.fromstring(render_html(run))
    rows = doc.get_element_by_id("scenarios").find_class("scenario")
    assert [r.get("data-status") for r in rows] == [PASSED, FAILED, UNSUPPORTED]
    failed = rows[1]
    assert failed.find_class("theme")[0].text_content() == "hot-plug"
    assert failed.find_class("profile")[0].text_content() == "v52"
    assert "disk vdb" in failed.find_class("first")[0].text_content()
    # each name links to its timeline
    href = failed.find_class("name")[0].find("a").get("href")
    assert doc.get_element_by_id(href[1:]).get("data-scenario") == "a1-implicit-reuse"


def test_html_timeline_open_only_for_failures(run: RunResult) -> None:
    doc = lhtml.fromstring(render_html(run))
    timelines = doc.find_class("timeline")
    assert [t.get("open") is not None for t in timelines] == [False, True, False]


def test_html_slot_grids_side_by_side_with_differences(run: RunResult) -> None:
    doc = lhtml.fromstring(render_html(run))
    step = doc.get_element_by_id("scn-2-step-2")
    assert step.get("data-status") == FAILED
    sides = step.find_class("side-map")
    assert [s.get("data-side") for s in sides] == ["live", "persistent", "chv"]
    for side in sides:
        cells = side.find_class("cell")
        assert len(cells) == 32
        assert [c.get("data-slot") for c in cells] == [f"{i:02x}" for i in range(32)]
        assert "hostbridge" in cells[0].get("class")
        assert "c-rng" in cells[1].get("class")
        assert "c-interface" in cells[2].get("class")
        assert "c-disk" in cells[3].get("class")
        diffs = [c.get("data-slot") for c in cells if "diff" in c.get("class").split()]
        assert diffs == ["04", "05"]
    live, pers, chv = ({c.get("data-slot"): c for c in s.find_class("cell")} for s in sides)
    assert "empty" in live["04"].get("class") and "c-disk" in live["05"].get("class")
    assert "c-disk" in pers["04"].get("class") and "empty" in pers["05"].get("class")
    assert "c-unknown" in chv["05"].get("class")
    assert chv["05"].text_content().endswith(f"CHV device {EVIL}")
    # untouched slots are not highlighted
    assert "diff" not in live["06"].get("class")


def test_html_grid_marks_a_side_without_a_map() -> None:
    run = RunResult(scenarios=[passing_scenario()])
    doc = lhtml.fromstring(render_html(run))
    step = doc.get_element_by_id("scn-1-step-1")  # define: only persistent exists
    sides = {s.get("data-side"): s for s in step.find_class("side-map")}
    assert len(sides["persistent"].find_class("cell")) == 32
    assert sides["live"].find_class("cell") == []
    assert "no definition" in sides["live"].text_content()
    assert "not running" in sides["chv"].text_content()


def test_html_multifunction_slot_lists_every_function() -> None:
    sc = passing_scenario()
    sc.steps[1].maps["live"]["testvm"]["0000:00:01.1"] = SlotEntry("disk vdc", "disk")
    doc = lhtml.fromstring(render_html(RunResult(scenarios=[sc])))
    live = next(
        s
        for s in doc.get_element_by_id("scn-1-step-2").find_class("side-map")
        if s.get("data-side") == "live"
    )
    cell = live.find_class("cell")[1]
    assert [d.get("data-bdf") for d in cell.find_class("dev")] == ["0000:00:01.0", "0000:00:01.1"]
    assert "disk vdc" in cell.text_content()


def test_html_exchanges_and_changes_are_collapsed(run: RunResult) -> None:
    doc = lhtml.fromstring(render_html(run))
    step = doc.get_element_by_id("scn-2-step-2")
    (exch,) = step.find_class("exchanges")
    assert exch.tag == "details" and exch.get("open") is None
    assert "CHV exchanges (1)" in exch.find("summary").text_content()
    assert "vm.add-disk" in exch.text_content()
    (changes,) = step.find_class("changes")
    assert changes.tag == "details" and changes.get("open") is None
    assert "live: added disk vdb at 0000:00:05.0" in changes.text_content()


def test_html_escapes_user_text(run: RunResult) -> None:
    page = render_html(run)
    assert EVIL not in page
    assert html.escape(EVIL) in page
    doc = lhtml.fromstring(page)
    scripts = doc.findall(".//script")
    assert len(scripts) == 1  # only the report's own script
    assert "alert" not in scripts[0].text_content()


def test_html_is_self_contained(run: RunResult) -> None:
    page = render_html(run)
    doc = lhtml.fromstring(page)
    assert doc.findall(".//link") == []
    assert all(s.get("src") is None for s in doc.findall(".//script"))
    assert all(i.get("src") is None for i in doc.findall(".//img"))
    assert "http://" not in page and "https://" not in page
    # every class used for a device has a colour rule and appears in the legend
    legend = doc.get_element_by_id("legend").text_content()
    for cls in ("disk", "interface", "rng", "vsock", "hostdev", "unknown"):
        assert f".c-{cls}{{background:" in page
        assert cls in legend


def test_html_unknown_class_is_drawn_as_unknown() -> None:
    sc = passing_scenario()
    sc.steps[1].maps["chv"]["testvm"]["0000:00:07.0"] = SlotEntry("odd", 'x" onclick="y')
    page = render_html(RunResult(scenarios=[sc]))
    doc = lhtml.fromstring(page)
    chv = next(
        s
        for s in doc.get_element_by_id("scn-1-step-2").find_class("side-map")
        if s.get("data-side") == "chv"
    )
    assert "c-unknown" in chv.find_class("cell")[7].get("class")
    assert 'onclick="y' not in page


def test_html_without_failures() -> None:
    doc = lhtml.fromstring(render_html(RunResult(scenarios=[passing_scenario()])))
    box = doc.get_element_by_id("failures")
    assert "none" in box.get("class")
    assert box.find_class("failure") == []


def test_html_error_scenario_without_steps_is_listed() -> None:
    doc = lhtml.fromstring(render_html(RunResult(scenarios=[error_scenario()])))
    (failure,) = doc.get_element_by_id("failures").find_class("failure")
    assert failure.get("data-status") == ERROR
    assert "unknown step 'atach-disk'" in failure.text_content()


# ----------------------------------------------------------------- JUnit


def test_junit_counts_and_well_formed(run: RunResult) -> None:
    run.scenarios.append(error_scenario())
    run.scenarios.append(
        ScenarioResult(name="after-crash", file="scenarios/x/y.yaml", status=SKIPPED)
    )
    text = render_junit(run)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "bdf-scenarios"
    assert suite.get("tests") == "5"
    assert suite.get("failures") == "1"
    assert suite.get("errors") == "1"
    assert suite.get("skipped") == "2"
    assert suite.get("time") == "1.250"
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests"))
    assert len(suite.findall("testcase/failure")) == int(suite.get("failures"))
    assert len(suite.findall("testcase/error")) == int(suite.get("errors"))
    assert len(suite.findall("testcase/skipped")) == int(suite.get("skipped"))
    names = [(c.get("classname"), c.get("name")) for c in cases]
    assert names == [
        ("scenarios.lifecycle", "a3-destroy-start"),
        ("scenarios.hotplug", "a1-implicit-reuse"),
        ("scenarios.hotplug", "hotplug-on-v51"),
        ("scenarios.scenarios", "broken-file"),
        ("scenarios.x", "after-crash"),
    ]
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None


def test_junit_failure_message_and_trace(run: RunResult) -> None:
    root = etree.fromstring(render_junit(run).encode("utf-8"))
    failure = root.find(".//testcase[@name='a1-implicit-reuse']/failure")
    assert failure is not None
    message = failure.get("message")
    assert "\n" not in message
    for needle in ("disk vdb", "0000:00:04.0", "persistent"):
        assert needle in message
    trace = failure.text
    assert "#2 (scenarios/hotplug/a1.yaml:12) host: attach-disk testvm --target vdb" in trace
    assert "[skipped] #3" in trace
    assert EVIL in trace  # text content, escaped by the serialiser
    skipped = root.find(".//testcase[@name='hotplug-on-v51']/skipped")
    assert skipped is not None and skipped.get("message").startswith("unsupported:")
    assert "v51 cannot hot-plug" in skipped.get("message")


def test_junit_replaces_characters_xml_cannot_hold() -> None:
    sc = failing_scenario()
    sc.steps[1].error = "bad byte \x01 and \x1b[31m escape"
    sc.name = "name\x00with nul"
    text = render_junit(RunResult(scenarios=[sc]))
    root = etree.fromstring(text.encode("utf-8"))
    case = root.find(".//testcase")
    assert case.get("name") == "name\ufffdwith nul"
    assert "bad byte \ufffd and \ufffd[31m escape" in case.find("failure").text


# ----------------------------------------------------------------- Markdown


def test_markdown_counts_and_scenario_rows(run: RunResult) -> None:
    md = render_markdown(run)
    lines = md.splitlines()
    header = lines.index("| passed | failed | error | unsupported | skipped | total |")
    assert lines[header + 2] == "| 1 | 1 | 0 | 1 | 0 | 3 |"
    table = lines[lines.index("## Scenarios") :]
    rows = [line for line in table if re.match(r"^\| \d+ \| ", line)]
    assert len(rows) == 3
    assert rows[0].startswith("| 1 | a3-destroy-start | life cycle | v53 | passed |")
    assert rows[1].startswith("| 2 | a1-implicit-reuse | hot-plug | v52 | failed |")
    assert rows[2].startswith("| 3 | hotplug-on-v51 | hot-plug | v51 | unsupported |")
    assert "NOT OK" in md


def test_markdown_failures_section(run: RunResult) -> None:
    md = render_markdown(run)
    failures = md.split("## Failures", 1)[1]
    assert "### a1-implicit-reuse (failed)" in failures
    assert (
        "Step 2 (<code>scenarios/hotplug/a1.yaml:12</code>) on host: "
        "<code>attach-disk testvm --target vdb --persistent</code>" in failures
    )
    assert "| Device | BDF | Side | Expected | Actual | Rule | Detail |" in failures
    assert (
        "| disk vdb | 0000:00:04.0 | persistent | 0000:00:05.0 | 0000:00:04.0 | in-sync |"
        in failures
    )
    # the device name from a user file is neutralised
    assert EVIL not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt; | 0000:00:05.0 | chv | absent |" in failures
    assert "a3-destroy-start" not in failures


def test_markdown_cell_escaping() -> None:
    assert md_cell("a|b\nc") == "a\\|b c"
    assert md_cell("<b>") == "&lt;b&gt;"
    assert md_cell(None) == ""


def test_markdown_without_failures() -> None:
    md = render_markdown(RunResult(scenarios=[passing_scenario()]))
    assert md.split("## Failures", 1)[1].strip() == "None."
    assert "Result: **OK**" in md


# ----------------------------------------------------------------- files and round trip


def test_write_reports_writes_all_files(run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "report"
    paths = write_reports(run, out)
    assert set(paths) == {"html", "junit", "markdown", "json"}
    assert {p.name for p in out.iterdir()} == {
        "index.html",
        "junit.xml",
        "summary.md",
        "run.json",
    }
    assert paths["html"].read_text(encoding="utf-8") == render_html(run)
    assert paths["junit"].read_text(encoding="utf-8") == render_junit(run)
    assert paths["markdown"].read_text(encoding="utf-8") == render_markdown(run)
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == run.to_json()


def test_write_reports_refuses_a_file_as_directory(run: RunResult, tmp_path: Path) -> None:
    target = tmp_path / "report"
    target.write_text("not a dir")
    with pytest.raises(NotADirectoryError, match="report"):
        write_reports(run, target)
    assert target.read_text() == "not a dir"


def test_round_trip_renders_identically(run: RunResult, tmp_path: Path) -> None:
    again = RunResult.from_json(json.loads(json.dumps(run.to_json())))
    assert render_html(again) == render_html(run)
    assert render_junit(again) == render_junit(run)
    assert render_markdown(again) == render_markdown(run)
    paths = write_reports(run, tmp_path)
    first = {k: p.read_text(encoding="utf-8") for k, p in paths.items()}
    rerender(paths["json"], tmp_path / "again")
    second = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "again").iterdir()}
    assert second == {paths[k].name: v for k, v in first.items()}


def test_rerender_reports_a_bad_file_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "run.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"run\.json"):
        rerender(bad)
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_html_renders_an_extra_side_after_the_standard_three() -> None:
    sc = passing_scenario()
    sc.steps[1].maps["chv-destination"] = _base_map()
    doc = lhtml.fromstring(render_html(RunResult(scenarios=[sc])))
    sides = doc.get_element_by_id("scn-1-step-2").find_class("side-map")
    assert [s.get("data-side") for s in sides] == ["live", "persistent", "chv", "chv-destination"]
    assert len(sides[3].find_class("cell")) == 32


def test_junit_classname_has_no_extra_package_levels() -> None:
    sc = passing_scenario(file="scenarios/v5.1-compat/x.yaml")
    root = etree.fromstring(render_junit(RunResult(scenarios=[sc])).encode("utf-8"))
    assert root.find(".//testcase").get("classname") == "scenarios.v5_1-compat"


def test_violations_shaped_like_the_invariant_checks_render_without_repetition() -> None:
    # the shape harness.checks.invariants produces: message repeats the other fields
    v = {
        "rule": "live-vs-chv",
        "device": "disk vdb",
        "side": "chv",
        "expected": "0000:00:04.0",
        "actual": None,
        "detail": "CHV has no id 'x'",
        "message": (
            "[live-vs-chv] disk vdb: chv has nothing, expected 0000:00:04.0 (CHV has no id 'x')"
        ),
    }
    plain = {
        "rule": "unaddressed",
        "device": "disk vdc",
        "side": "persistent",
        "expected": "a PCI address",
        "actual": None,
        "detail": "",
        "message": "[unaddressed] disk vdc: persistent has nothing, expected a PCI address",
    }
    sc = failing_scenario()
    sc.steps[1].violations = [v, plain]
    assert violation_summary(v) == (
        "[live-vs-chv] disk vdb on chv: expected 0000:00:04.0, actual absent (CHV has no id 'x')"
    )
    doc = lhtml.fromstring(render_html(RunResult(scenarios=[sc])))
    rows = doc.get_element_by_id("failures").find_class("violation")
    notes = [r.find_class("msg")[0].text_content() for r in rows]
    assert notes == ["CHV has no id 'x'", ""]
    md = render_markdown(RunResult(scenarios=[sc]))
    assert "| disk vdc |  | persistent | a PCI address | absent | unaddressed |  |" in md


def test_violation_with_only_a_message() -> None:
    assert violation_summary({"message": "domain has two devices at 0000:00:04.0"}) == (
        "domain has two devices at 0000:00:04.0"
    )


# ----------------------------------------------------------------- differences, places, lines


def _side_cells(step: lhtml.HtmlElement, domain: str = "testvm", segment: str = "0000"):
    """side -> slot -> cell of one grid of a rendered step."""
    (seg,) = [
        s
        for s in step.find_class("segment")
        if s.get("data-domain") == domain and s.get("data-segment") == segment
    ]
    return {
        side.get("data-side"): {c.get("data-slot"): c for c in side.find_class("cell")}
        for side in seg.find_class("side-map")
    }


def _outlined(step: lhtml.HtmlElement) -> list[tuple[str, str, str, str]]:
    """(domain, segment, side, slot) of every cell marked ``diff`` in a rendered step."""
    return [
        (seg.get("data-domain"), seg.get("data-segment"), side.get("data-side"), c.get("data-slot"))
        for seg in step.find_class("segment")
        for side in seg.find_class("side-map")
        for c in side.find_class("cell")
        if "diff" in c.get("class").split()
    ]


def test_difference_line_names_each_sides_device(run: RunResult) -> None:
    step = run.scenarios[1].steps[1]
    evil = f"CHV device {EVIL}"
    assert difference_notes(step) == [
        "0000:00:04.0 (live: -; persistent: disk vdb; chv: -)",
        f"0000:00:05.0 (live: disk vdb; persistent: -; chv: {evil})",
    ]
    doc = lhtml.fromstring(render_html(run))
    want = (
        "differs between sides: 0000:00:04.0 (live: -; persistent: disk vdb; chv: -), "
        f"0000:00:05.0 (live: disk vdb; persistent: -; chv: {evil})"
    )
    assert doc.get_element_by_id("scn-2-step-2").find_class("diffs")[0].text_content() == want
    failure = doc.get_element_by_id("failures").find_class("failure")[0]
    assert failure.find_class("diffs")[0].text_content() == want
    # the same words in the Markdown summary and in JUnit's trace
    md = render_markdown(run)
    assert "Differs between sides: 0000:00:04.0 (live: -; persistent: disk vdb; chv: -)" in md
    assert "differs between sides: 0000:00:04.0 (live: -; persistent: disk vdb; chv: -)" in (
        step_trace(run.scenarios[1])
    )


def test_difference_lookup_reads_bdfs_in_any_case_and_without_segment() -> None:
    step = StepResult(
        index=1,
        text="start testvm",
        maps={"live": {"testvm": {"0000:00:0A.0": SlotEntry("disk vdk", "disk")}}},
        differences=["00:0a.0"],
    )
    assert difference_notes(step) == ["00:0a.0 (live: disk vdk; persistent: -; chv: -)"]
    doc = lhtml.fromstring(
        render_html(RunResult(scenarios=[ScenarioResult("x", "x.yaml", steps=[step])]))
    )
    assert _outlined(doc.get_element_by_id("scn-1-step-1")) == [("testvm", "0000", "live", "0a")]


def test_html_grid_heading_names_the_domain_and_the_pci_segment() -> None:
    sc = failing_scenario()
    bad = sc.steps[1]
    vdc = SlotEntry("disk vdc", "disk")
    bad.maps["live"]["testvm"]["0001:00:02.0"] = vdc
    bad.maps["chv"]["testvm"]["0001:00:02.0"] = vdc
    bad.differences.append("0001:00:02.0")
    doc = lhtml.fromstring(render_html(RunResult(scenarios=[sc])))
    step = doc.get_element_by_id("scn-1-step-2")
    headings = [h.text_content() for h in step.iter("h4")]
    assert headings == ["testvm \u00b7 PCI segment 0000", "testvm \u00b7 PCI segment 0001"]
    seg0, seg1 = _side_cells(step, segment="0000"), _side_cells(step, segment="0001")
    # the segment-1 disk is in segment 1's slot 02, not on segment 0's interface
    assert "disk vdc" in seg1["live"]["02"].text_content()
    assert "disk vdc" not in seg0["live"]["02"].text_content()
    assert "empty" in seg1["persistent"]["02"].get("class")
    # each BDF outlines its own segment's slot, on every side
    assert sorted(_outlined(step)) == sorted(
        [("testvm", "0000", side, slot) for side in SIDES for slot in ("04", "05")]
        + [("testvm", "0001", side, "02") for side in SIDES]
    )
    assert (
        "(live: disk vdc; persistent: -; chv: disk vdc)"
        in step.find_class("diffs")[0].text_content()
    )
    assert seg1["live"]["00"].get("title") == "0001:00:00.0 host bridge"


def test_html_differences_of_several_domains_outline_their_own_grid() -> None:
    """With two hosts the runner keys domains ``host/domain`` and names them in differences."""
    vdb = SlotEntry("disk vdb", "disk")
    maps = {
        "live": {
            "dst/testvm": _base_map()["testvm"],
            "src/testvm": _base_map({"0000:00:04.0": vdb})["testvm"],
        },
        "persistent": {"dst/testvm": _base_map()["testvm"], "src/testvm": _base_map()["testvm"]},
        "chv": {
            "dst/testvm": _base_map()["testvm"],
            "src/testvm": _base_map({"0000:00:04.0": vdb})["testvm"],
        },
    }
    step = StepResult(
        index=3,
        line=20,
        text="attach-disk testvm /nfs/vdb.img vdb --live",
        host="src",
        maps=maps,
        differences=["src/testvm 0000:00:04.0"],
    )
    sc = ScenarioResult("two hosts", "scenarios/migration/m.yaml", steps=[step])
    doc = lhtml.fromstring(render_html(RunResult(scenarios=[sc])))
    rendered = doc.get_element_by_id("scn-1-step-3")
    assert [s.get("data-domain") for s in rendered.find_class("segment")] == [
        "dst/testvm",
        "src/testvm",
    ]
    assert sorted(_outlined(rendered)) == [
        ("src/testvm", "0000", side, "04") for side in sorted(SIDES)
    ]
    assert rendered.find_class("diffs")[0].text_content() == (
        "differs between sides: "
        "src/testvm 0000:00:04.0 (live: disk vdb; persistent: -; chv: disk vdb)"
    )


def test_every_report_names_the_failed_steps_file_and_line(run: RunResult) -> None:
    where = "scenarios/hotplug/a1.yaml:12"
    doc = lhtml.fromstring(render_html(run))
    step = doc.get_element_by_id("scn-2-step-2")
    assert step.get("data-where") == where
    assert step.find_class("where")[0].text_content() == where
    assert where in step.find_class("step-head")[0].text_content()
    why = doc.get_element_by_id("failures").find_class("why")[0].text_content()
    assert f"#2 ({where}) on host" in why
    # every step of every timeline carries its own line
    assert (
        doc.get_element_by_id("scn-1-step-1").get("data-where") == "scenarios/lifecycle/a3.yaml:9"
    )
    assert f"step 2 ({where}) `attach-disk" in failure_summary(run.scenarios[1])
    junit = etree.fromstring(render_junit(run).encode("utf-8"))
    assert (
        f"#2 ({where}) host:" in junit.find(".//testcase[@name='a1-implicit-reuse']/failure").text
    )
    assert f"Step 2 (<code>{where}</code>)" in render_markdown(run)


def test_a_run_json_without_step_lines_still_loads_and_renders(run: RunResult) -> None:
    data = json.loads(json.dumps(run.to_json()))
    for s in data["scenarios"]:
        for st in s["steps"]:
            del st["line"]  # written before steps had their line
    old = RunResult.from_json(data)
    assert {st.line for s in old.scenarios for st in s.steps} == {0}
    page = render_html(old)
    doc = lhtml.fromstring(page)
    assert doc.get_element_by_id("scn-2-step-2").get("data-where") == ""
    assert doc.find_class("where") == []
    assert ".yaml:0" not in page and ".yaml:0" not in render_markdown(old)
    assert "step 2 `attach-disk" in failure_summary(old.scenarios[1])


def test_html_device_names_may_break_only_at_separators() -> None:
    sc = passing_scenario()
    sc.steps[1].maps["live"]["testvm"]["0000:00:05.0"] = SlotEntry("rng implicit-rng-device", "rng")
    sc.steps[1].maps["live"]["testvm"]["0000:00:06.0"] = SlotEntry(
        f"CHV device _a{EVIL}", "unknown"
    )
    page = render_html(RunResult(scenarios=[sc]))
    assert "interface tap1" in page
    assert "rng implicit-<wbr>rng-<wbr>device" in page
    # an escaped name keeps its entities whole; a leading separator gives no break
    assert "CHV device _a&lt;script&gt;alert(1)&lt;/<wbr>script&gt;" in page
    css = page[page.index("<style>") : page.index("</style>")]
    assert "anywhere" not in css and "break-all" not in css.split(".cell", 1)[1]


def _step_cells(doc: lhtml.HtmlElement, step: int) -> list[tuple[str, str]]:
    live = next(
        s
        for s in doc.get_element_by_id(f"scn-1-step-{step}").find_class("side-map")
        if s.get("data-side") == "live"
    )
    return [(c.get("data-slot"), c.get("class")) for c in live.find_class("cell")]


def test_html_grids_that_look_alike_keep_their_own_differences() -> None:
    maps = {"live": {"testvm": {"0000:00:03.0": SlotEntry("disk vda", "disk")}}}
    steps = [
        StepResult(1, "start testvm", maps=maps),
        StepResult(2, "attach", maps=maps, differences=["0000:00:03.0"]),
        StepResult(3, "attach", maps=maps, differences=["other 0000:00:03.0"]),
        StepResult(4, "detach", maps=maps),
    ]
    doc = lhtml.fromstring(
        render_html(RunResult(scenarios=[ScenarioResult("a", "a", steps=steps)]))
    )
    outlined = {
        i: [s for s, cls in _step_cells(doc, i) if "diff" in cls.split()] for i in (1, 2, 3, 4)
    }
    assert outlined == {1: [], 2: ["03"], 3: [], 4: []}
    assert _step_cells(doc, 1) == _step_cells(doc, 4)


def test_html_api_bodies_that_look_alike_keep_their_own_text() -> None:
    bodies = [{"id": 1}, {"id": True}, {"id": 1.0}, {"id": 1}]
    step = StepResult(
        1, "start testvm", exchanges=[{"method": "GET", "response": b} for b in bodies]
    )
    doc = lhtml.fromstring(
        render_html(RunResult(scenarios=[ScenarioResult("a", "a", steps=[step])]))
    )
    texts = [row.findall("td")[5].text_content() for row in doc.find_class("exchange")]
    assert texts == [json.dumps(b, indent=1) for b in bodies]


def test_html_renders_a_run_json_with_odd_slot_values() -> None:
    """A run read back from an edited run.json renders as it did before grids were kept."""
    maps = {"live": {"testvm": {"0000:00:03.0": SlotEntry("disk vda", "disk", ["a", "b"])}}}  # type: ignore[arg-type]
    step = StepResult(1, "start testvm", maps=maps)
    page = render_html(RunResult(scenarios=[ScenarioResult("a", "a", steps=[step])]))
    assert "alias [&#x27;a&#x27;, &#x27;b&#x27;]" in page
