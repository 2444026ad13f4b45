"""Ctrl-C and SIGTERM end long runs cleanly: the runs that finished are reported as
such, and no worker, hypervisor process or temporary directory is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, child_env

pytestmark = pytest.mark.slow

TEMP_PLACES = [Path("/dev/shm"), Path("/tmp")]


def _temp_entries() -> set[Path]:
    out: set[Path] = set()
    for place in TEMP_PLACES:
        if place.is_dir():
            out.update(p for p in place.iterdir() if p.name.startswith(("bdf-", "lv-")))
    return out


def _group_members(pgid: int) -> list[str]:
    """Processes (zombies included) still in the process group ``pgid``."""
    out = subprocess.run(
        ["ps", "-o", "pid=,stat=,args=", "-g", str(pgid)], capture_output=True, text=True
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def _start(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
        env=child_env(),
        start_new_session=True,  # its own process group: Ctrl-C is a group signal
    )


def _interrupt(proc: subprocess.Popen[str], how: str) -> None:
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    else:
        proc.send_signal(signal.SIGTERM)  # what a CI system sends to the command


@pytest.mark.parametrize("jobs", [1, 2, 8])
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_run_reports_what_finished_and_leaves_nothing(jobs: int, how: str) -> None:
    before = _temp_entries()
    proc = _start(
        "-m",
        "harness.cli",
        "run",
        "scenarios/hotplug",
        "--jobs",
        str(jobs),
        "--target",
        "reference-process",
    )
    assert proc.stdout is not None
    finished = []
    for line in proc.stdout:  # wait until runs are under way and one has finished
        if line.startswith(("PASS", "FAIL", "ERROR")):
            finished.append(line)
            break
    _interrupt(proc, how)
    rest = proc.stdout.read()
    code = proc.wait(timeout=60)  # a hang guard, not a measurement
    assert code == 130, rest
    summary = [line for line in rest.splitlines() if line.startswith("INTERRUPTED: ")]
    assert len(summary) == 1, rest
    done = int(summary[0].split()[1])
    planned = int(summary[0].split()[3])
    assert 1 <= done < planned
    reported = finished + [line for line in rest.splitlines() if line.startswith("PASS")]
    assert len(reported) == done  # every finished run is listed, none twice
    time.sleep(0.2)
    assert _group_members(proc.pid) == []
    assert _temp_entries() - before == set()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_soak_prints_its_totals_and_leaves_nothing(tmp_path: Path, how: str) -> None:
    before = _temp_entries()
    proc = _start(
        "-m",
        "harness.explore.soak",
        "--seconds",
        "120",
        "--progress",
        "--report-dir",
        str(tmp_path),
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # one batch done
        if "steps," in line:
            break
    _interrupt(proc, how)
    rest = proc.stdout.read()
    code = proc.wait(timeout=60)
    assert code == 130, rest
    assert "interrupted: the totals cover the batches that finished" in rest
    assert int(rest.split("steps explored: ")[1].split()[0]) > 0
    time.sleep(0.2)
    assert _group_members(proc.pid) == []
    assert _temp_entries() - before == set()
