"""The README's quickstart, run as a newcomer would: in a fresh copy of the checkout, the
first command (a virtual environment, the project installed into it, the scenario suite),
then the commands the README promises work afterwards.

It installs from the package index and runs the suite once more, so it takes a minute or
two: it runs under ``CI=true`` or ``BDF_QUICKSTART=1`` and is skipped, saying so,
otherwise. The second quickstart command (``tox``) is the test suite this test is part of.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.environ.get("CI") or os.environ.get("BDF_QUICKSTART")),
        reason="installs from the package index: runs under CI=true or BDF_QUICKSTART=1",
    ),
]


def quickstart_commands(readme: str) -> list[str]:
    """The command lines of the Quickstart section's first code block."""
    section = readme.split("## Quickstart", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README.md: no sh code block under ## Quickstart"
    lines = [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def test_the_quickstart_has_two_commands() -> None:
    commands = quickstart_commands((ROOT / "README.md").read_text())
    assert len(commands) == 2 and commands[1] == "tox"
    assert "tox -e scenarios" in commands[0]


def _copy_checkout(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def test_after_the_quickstart_the_commands_work(tmp_path: Path) -> None:
    clone = tmp_path / "checkout"
    _copy_checkout(clone)
    first = quickstart_commands((ROOT / "README.md").read_text())[0]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VIRTUAL_ENV", "TOX_", "PYTEST_", "PYTHONPATH"))
    }
    env["CHV_REFERENCE_DIR"] = os.environ.get(
        "CHV_REFERENCE_DIR", str(ROOT.parent / "shared" / "reference")
    )
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if "/.tox/" not in p and "venv" not in p
    )
    afterwards = (
        "bdf-harness --help >/dev/null && fakechv --version && cloud-hypervisor --version && "
        "python examples/tour.py >/dev/null && bdf-harness validate scenarios >/dev/null"
    )
    script = f"set -e\n{first}\n{afterwards}\n"
    out = subprocess.run(
        ["bash", "-c", script],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert (clone / "reports" / "index.html").is_file()
    assert "cloud-hypervisor v53" in out.stdout
