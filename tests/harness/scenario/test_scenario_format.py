"""The scenario file format: what loads, and file:line errors for what does not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.scenario.load import load_scenario
from harness.scenario.model import ScenarioError, normalise_bdf

DOMAINS = Path(__file__).resolve().parents[3] / "scenarios" / "domains"

HEADER = f"""\
name: test scenario
source: tests
documents:
  domain: {{file: {DOMAINS / "domain-chv.xml"}}}
  nic: {{file: {DOMAINS / "new_interface.xml"}}}
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    return str(err.value)


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the text")


def test_valid_scenario_loads_with_steps_lines_and_documents(tmp_path: Path) -> None:
    text = HEADER + (
        "profiles: [v52, head]\n"
        "steps:\n"
        "  - run: define domain\n"
        "  - run: start testvm\n"
        "  - run: attach-disk testvm /nfs/vdb.img vdb --persistent\n"
        "  - expect:\n"
        "      device: disk vdb\n"
        "      live: 00:04.0\n"
        "      persistent: 0000:00:04.0\n"
        "  - snapshot: after\n"
        "  - expect: {live: snapshot after, chv: same-as-live}\n"
        '  - expect: {live: {"04": disk vdb, "0000:00:05.0": empty}, exact: true}\n'
        "  - fail: attach-device testvm nic --live --config\n"
        '    message: "double use"\n'
        "  - fault: {endpoint: vm.add-disk, count: 2}\n"
        "  - in-sync\n"
    )
    path = write(tmp_path, text)
    scenario = load_scenario(path)
    assert scenario.profiles == ["v52", "head"]
    assert scenario.hosts == ["host"]
    assert [s.kind for s in scenario.steps] == [
        "run",
        "run",
        "run",
        "expect",
        "snapshot",
        "expect",
        "expect",
        "fail",
        "fault",
        "expect",
    ]
    assert scenario.steps[2].line == line_of(text, "attach-disk")
    assert scenario.steps[2].command is not None
    assert scenario.steps[2].command.args["target"] == "vdb"
    exp = scenario.steps[3].expect
    assert exp is not None and exp.device == "disk vdb"
    # YAML 1.1 would read 00:04.0 as a base-60 number; the loader keeps it a BDF
    assert exp.sides == {"live": "0000:00:04.0", "persistent": "0000:00:04.0"}
    slots = scenario.steps[6].expect
    assert slots is not None and slots.exact
    assert [(s.bdf, s.value) for s in slots.sides["live"]] == [  # type: ignore[union-attr]
        ("0000:00:04.0", "disk vdb"),
        ("0000:00:05.0", "empty"),
    ]
    assert scenario.steps[7].message == "double use"
    assert scenario.steps[8].fault == {"endpoint": "vm.add-disk", "count": 2}
    assert scenario.steps[9].expect is not None and scenario.steps[9].expect.in_sync
    assert "<interface" in scenario.document("nic").text


@pytest.mark.parametrize(
    ("body", "needle", "reason"),
    [
        ("  - run: start testvm\n  - bogus: 1\n", "bogus", "unknown step key 'bogus'"),
        ("  - run: start testvm\n    colour: red\n", "colour", "unknown step key 'colour'"),
        ("  - run: frobnicate testvm\n", "frobnicate", "unknown command: 'frobnicate'"),
        ("  - run: attach-disk testvm /nfs/vdb.img\n", "attach-disk", "requires <target>"),
        (
            "  - expect: {live: {04: disk}}\n",
            "04: disk",
            "slot key 04 in 'live' must be a quoted string",
        ),
        ("  - run: attach-device testvm nowhere\n", "nowhere", "missing document 'nowhere'"),
        ("  - run: attach-disk testvm a vdb --frob\n", "--frob", "doesn't support option --frob"),
        ("  - expect: {live: snapshot nope}\n", "nope", "no snapshot named 'nope'"),
        ("  - expect: {device: disk vdb, live: 4}\n", "device", "must be a BDF"),
        ("  - run: start testvm\n    host: other\n", "other", "host 'other' is not one of"),
        (
            "  - run: start testvm\n    violations: [no-such-rule]\n",
            "no-such-rule",
            "unknown invariant rule",
        ),
    ],
)
def test_step_errors_name_file_line_and_reason(
    tmp_path: Path, body: str, needle: str, reason: str
) -> None:
    text = HEADER + "steps:\n  - run: define domain\n" + body
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line_of(text, needle)}: "), message
    assert reason in message


def test_unquoted_octal_slot_key_is_reported_as_written(tmp_path: Path) -> None:
    text = HEADER + 'steps:\n  - expect:\n      live: {"01": rng, 010: disk}\n'
    message = error_of(write(tmp_path, text))
    assert f":{line_of(text, '010')}: " in message
    assert "slot key 010" in message and '"010"' in message


def test_unknown_profile(tmp_path: Path) -> None:
    text = HEADER + "profiles: [v53, v99]\nsteps:\n  - run: define domain\n"
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line_of(text, 'v99')}: ")
    assert "unknown CHV profile 'v99'" in message and "v51" in message


def test_missing_document_file(tmp_path: Path) -> None:
    text = (
        "name: x\ndocuments:\n  domain: {file: nowhere/domain.xml}\n"
        "steps:\n  - run: define domain\n"
    )
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:3: ")
    assert "document 'domain'" in message and "no such file" in message


def test_missing_required_top_level_key_and_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\n")
    assert "missing required key 'steps'" in error_of(path)
    path = write(tmp_path, "name: x\nstep: []\n", "t.yaml")
    message = error_of(path)
    assert message.startswith(f"{path}:2: ") and "unknown top-level key 'step'" in message


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nsteps:\n  - run: [unclosed\n")
    message = error_of(path)
    assert re.match(rf"{re.escape(str(path))}:\d+: YAML error: ", message), message


def test_migrate_needs_requires_and_a_known_host(tmp_path: Path) -> None:
    base = HEADER + "hosts: [src, dst]\n"
    path = write(tmp_path, base + "steps:\n  - run: migrate testvm --desturi dst --live --p2p\n")
    assert "requires: [migration]" in error_of(path)
    text = base + "requires: [migration]\nsteps:\n  - run: migrate testvm --desturi elsewhere\n"
    path = write(tmp_path, text, "t.yaml")
    assert "--desturi 'elsewhere' is not one of the scenario's hosts" in error_of(path)
    text = base + "requires: [migration]\nsteps:\n  - run: migrate testvm --desturi dst\n"
    assert load_scenario(write(tmp_path, text, "u.yaml")).requires == ["migration"]


def test_expect_may_name_its_host(tmp_path: Path) -> None:
    text = HEADER + (
        "hosts: [src, dst]\nsteps:\n  - expect: {host: dst, domain: testvm, state: absent}\n"
    )
    step = load_scenario(write(tmp_path, text)).steps[0]
    assert step.host == "dst"
    assert step.expect is not None and step.expect.state == "absent"


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    text = HEADER + "steps:\n  - run: define domain\n    run: start testvm\n"
    path = write(tmp_path, text)
    message = error_of(path)
    assert "duplicate key 'run'" in message
    assert message.startswith(f"{path}:{line_of(text, 'start testvm')}: ")


def test_normalise_bdf() -> None:
    assert normalise_bdf("00:1f.0") == "0000:00:1f.0"
    assert normalise_bdf("0001:00:04.0") == "0001:00:04.0"
    assert normalise_bdf("04") is None
    assert normalise_bdf("00:04.8") is None


def test_every_shipped_scenario_is_valid() -> None:
    root = Path(__file__).resolve().parents[3] / "scenarios"
    files = sorted(root.rglob("*.yaml"))
    assert len(files) >= 40
    for path in files:
        scenario = load_scenario(path)
        assert scenario.source, f"{path}: scenarios name where they come from"


def test_eject_option(tmp_path: Path) -> None:
    text = HEADER + "eject: never\nsteps:\n  - run: define domain\n"
    assert load_scenario(write(tmp_path, text)).eject == "never"
    text = HEADER + "eject: 50\nsteps:\n  - run: define domain\n"
    assert load_scenario(write(tmp_path, text, "t.yaml")).eject == "50"
    text = HEADER + "eject: sometimes\nsteps:\n  - run: define domain\n"
    path = write(tmp_path, text, "u.yaml")
    message = error_of(path)
    assert message.startswith(f"{path}:{line_of(text, 'sometimes')}: ")
    assert "'eject' must be immediate, never or a delay in milliseconds" in message


def test_a_hash_in_free_text_is_text(tmp_path: Path) -> None:
    from harness.scenario.load import parse_scenario

    domain = (DOMAINS / "domain-chv.xml").read_text()
    (tmp_path / "d.xml").write_text(domain)
    text = (
        "name: issue #12 check\n"
        "source: CHV issue #7013 and libvirt #1\n"
        "description: 'quoted # stays'  # a comment\n"
        "documents:\n  domain: {file: d.xml}\n"
        "steps:\n  - run: define domain   # a comment\n"
    )
    scenario = parse_scenario(text, tmp_path / "s.yaml")
    assert scenario.name == "issue #12 check"
    assert scenario.source == "CHV issue #7013 and libvirt #1"
    assert scenario.description == "quoted # stays"
    assert scenario.steps[0].text == "define domain"


def test_state_absent_holds_on_a_host_without_domains() -> None:
    from harness.checks.expectations import CheckFailed, pick_domain
    from harness.scenario.model import Expectation

    assert pick_domain("src", [], Expectation(state="absent")) == ""
    with pytest.raises(CheckFailed, match="host src has no domain to check"):
        pick_domain("src", [], Expectation(state="running"))
