"""The scenario loader is bounded: hostile or broken files get one FILE:LINE error,
in bounded memory, without hanging, and documents come only from the scenario's own
folders unless the user opts in."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from harness.scenario.files import MAX_FILE_BYTES, DocumentAccess
from harness.scenario.load import MAX_STEPS, load_scenario
from harness.scenario.model import ScenarioError

STEP = "steps:\n  - run: define domain\n"


def _error(path: Path, access: DocumentAccess | None = None) -> str:
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path, access)
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _bomb() -> str:
    text = 'name: bomb\na: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    prev = "a"
    for name in "bcdefghij":
        text += f"{name}: &{name} [" + ", ".join(["*" + prev] * 9) + "]\n"
        prev = name
    return text + "steps: [*j]\n"


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert _error(path) == f"{path}:3: YAML aliases (*'a') are not supported in scenario files"


@pytest.mark.parametrize("depth", [40, 5000])
def test_deep_nesting_is_refused(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: deep\nsteps: " + "[" * depth + "]" * depth + "\n")
    message = _error(path)
    assert message.startswith(f"{path}:2: ")
    assert "nest" in message


def test_huge_number_is_refused_with_a_short_quote(tmp_path: Path) -> None:
    path = tmp_path / "n.yaml"
    path.write_text("name: n\nsegments: " + "9" * 5000 + "\n" + STEP)
    message = _error(path)
    assert message.startswith(f"{path}:2: ") and "too large" in message
    assert len(message) < len(str(path)) + 160


def test_absurd_step_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text("name: many\nsteps:\n" + "  - run: define domain\n" * (MAX_STEPS + 1))
    assert _error(path) == (f"{path}:3: {MAX_STEPS + 1} steps, more than the limit of {MAX_STEPS}")


def test_a_file_over_the_limit_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n# " + "x" * MAX_FILE_BYTES + "\n" + STEP)
    assert "more than the limit of" in _error(path)


def test_long_values_are_quoted_briefly(tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    path.write_text("name: long\nprofile: " + "v" * 100_000 + "\n" + STEP)
    message = _error(path)
    assert message.startswith(f"{path}:2: unknown CHV profile 'vvv")
    assert len(message) < len(str(path)) + 200


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_documents_must_be_regular_files(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        target = tmp_path / "fifo"
        os.mkfifo(target)  # nobody writes: opening it for reading must not wait
        ref, what = "fifo", "a FIFO"
    elif kind == "directory":
        (tmp_path / "sub").mkdir()
        ref, what = "sub", "a directory"
    else:
        ref, what = "/dev/zero", "a character device"
    path = tmp_path / "s.yaml"
    path.write_text(f"name: d\ndocuments:\n  domain: {{file: {ref}}}\n" + STEP)
    message = _error(path, DocumentAccess(anywhere=True))
    assert message == f"{path}:3: document 'domain': '{ref}' is {what}, not a regular file"


def test_documents_outside_the_tree_need_the_opt_in(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "dom.xml").write_text("<domain/>")
    suite = tmp_path / "suite" / "group"
    suite.mkdir(parents=True)
    path = suite / "s.yaml"
    path.write_text("name: o\ndocuments:\n  domain: {file: ../../outside/dom.xml}\n" + STEP)
    message = _error(path)
    assert message == (
        f"{path}:3: document 'domain': '../../outside/dom.xml' is outside the scenario's "
        "folder and the current directory (--allow-outside-documents reads it anyway)"
    )
    # a folder the user names covers the files below it
    assert load_scenario(path, DocumentAccess.for_paths([tmp_path])).documents["domain"]
    assert load_scenario(path, DocumentAccess(anywhere=True)).documents["domain"]


def test_cli_opt_in_and_bounded_memory(tmp_path: Path) -> None:
    """validate, in a child limited to 768 MiB of address space, refuses /dev/zero by
    its kind (not by running out of memory) once outside documents are allowed."""
    path = tmp_path / "z.yaml"
    path.write_text("name: z\ndocuments:\n  domain: {file: /dev/zero}\n" + STEP)

    def limited() -> None:
        limit = 768 << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def validate(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", "validate", str(path), *extra],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=limited,
        )

    refused = validate()
    assert refused.returncode == 2
    assert "is outside the scenario's folder" in refused.stderr
    read = validate("--allow-outside-documents")
    assert read.returncode == 2
    assert read.stderr.strip() == (
        f"bdf-harness: error: {path}:3: document 'domain': '/dev/zero' is a character "
        "device, not a regular file"
    )
