"""``bdf-harness``: exit codes, help, validate, list, replay --trace, reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
A4 = ROOT / "scenarios" / "hotplug" / "a4-defs-in-sync-after-transient-unplug.yaml"
DOMAIN = ROOT / "scenarios" / "domains" / "domain-chv.xml"


def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(
        f"name: broken\ndocuments:\n  domain: {{file: {DOMAIN}}}\n"
        "steps:\n  - run: define domain\n  - run: attach-disk testvm only-a-source\n"
    )
    return path


def failing(tmp_path: Path) -> Path:
    path = tmp_path / "failing.yaml"
    path.write_text(
        f"name: failing\nsource: tests\ndocuments:\n  domain: {{file: {DOMAIN}}}\n"
        "steps:\n  - run: define domain\n  - run: start testvm\n"
        "  - expect: {device: disk vda, live: 00:07.0}\n"
    )
    return path


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "bdf-harness replay" in out and "validate" in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--report-dir" in capsys.readouterr().out


def test_validate_ok_and_broken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(A4)]) == 0
    assert "ok (A4" in capsys.readouterr().out
    bad = broken(tmp_path)
    assert main(["validate", str(A4), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:6: " in err and "requires <target> option" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_validate_broken_file_as_a_command(tmp_path: Path) -> None:
    """The installed entry point: exit 2, file:line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "validate", str(broken(tmp_path))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert proc.returncode == 2
    assert "broken.yaml:6: " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such scenario file or directory" in capsys.readouterr().err
    assert main(["run", str(broken(tmp_path))]) == 2
    assert "nothing was run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(A4), "--profile", "v99"])
    assert exit_info.value.code == 2
    assert main(["run", str(A4), "--jobs", "0"]) == 2
    assert main(["replay", str(tmp_path / "nope.yaml"), "--trace"]) == 2


def test_conformance_needs_the_libvirt_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "conformance.md"
    assert main(["run", str(A4), "--conformance", str(out)]) == 2
    assert "--target libvirt" in capsys.readouterr().err and not out.exists()
    # without a libvirt build the target says why, before anything runs
    monkeypatch.setenv("LIBVIRT_PREFIX", str(tmp_path / "no-libvirt"))
    assert main(["run", str(A4), "--target", "libvirt", "--conformance", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no libvirt build in" in err and "tools/build-libvirt.sh" in err
    assert "Traceback" not in err and not out.exists()


def test_run_exit_codes_and_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(A4), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS ") == 3  # one line per profile run
    assert "OK: 3 scenario runs" in out
    assert main(["run", str(A4), str(failing(tmp_path)), "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAIL        failing [v53]" in out
    assert "disk vda: live has 0000:00:03.0, expected 0000:00:07.0" in out
    assert "FAILED: 4 scenario runs" in out


def test_unsupported_does_not_fail_the_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.targets.reference import ReferenceTarget

    # a target without migration (stock libvirt's CH driver has none)
    monkeypatch.setattr(ReferenceTarget, "features", frozenset({"faults"}))
    path = ROOT / "scenarios" / "migration" / "i2-disk-after-nic-stays-after-migration.yaml"
    assert main(["run", str(path), "--profile", "v53"]) == 0
    out = capsys.readouterr().out
    assert "UNSUPPORTED" in out and "requires migration" in out


def test_run_writes_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports = tmp_path / "reports"
    assert main(["run", str(A4), "--profile", "v53", "--report-dir", str(reports)]) == 0
    data = json.loads((reports / "run.json").read_text())
    assert data["scenarios"][0]["status"] == "passed"
    assert (reports / "junit.xml").exists()
    assert "report (json)" in capsys.readouterr().out


def test_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", str(ROOT / "scenarios" / "migration")]) == 0
    out = capsys.readouterr().out
    assert "requires migration" in out and "C6" in out
    assert main(["list", str(broken(tmp_path))]) == 2
    assert "INVALID" in capsys.readouterr().out


def test_replay_trace_shows_chv_requests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(A4), "--trace", "--profile", "v53"]) == 0
    out = capsys.readouterr().out
    assert f"step 4 ({A4}:18) [host] attach-disk --domain testvm --target vdb" in out
    # after the live-only detach, the sides differ at 04: each side's device is named
    assert "differences: 0000:00:04.0 (live: -; persistent: disk vdb; chv: -)" in out
    assert "CHV testvm: PUT /api/v1/vm.add-disk" in out
    assert '"pci_device_id": 4' in out
    assert '-> 200 {"bdf": "0000:00:04.0"' in out
    assert "change: testvm persistent: + disk vdb at 0000:00:04.0" in out
    assert "CHV testvm: PUT /api/v1/vm.remove-device" in out


def test_replay_trace_shows_violations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = failing(tmp_path)
    assert main(["replay", str(path), "--trace"]) == 1
    out = capsys.readouterr().out
    assert "status: failed" in out and "error: disk vda: live has 0000:00:03.0" in out
    assert f"step 3 ({path}:8) [host] expect" in out  # where it failed


def test_run_loads_each_scenario_file_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check before the run loads every file; the run's plan takes those scenarios."""
    import harness.cli
    import harness.scenario.batch
    import harness.scenario.load

    loads: list[str] = []

    def counted(path: Path | str, *args: object, **kwargs: object) -> object:
        loads.append(Path(path).name)
        return harness.scenario.load.load_scenario(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(harness.cli, "load_scenario", counted)
    monkeypatch.setattr(harness.scenario.batch, "load_scenario", counted)
    other = ROOT / "scenarios" / "hotplug" / "a1-implicit-assignment-and-reuse.yaml"
    assert main(["run", str(A4), str(other), "--jobs", "1"]) == 0
    assert sorted(loads) == sorted([A4.name, other.name])
    assert "FAIL" not in capsys.readouterr().out
