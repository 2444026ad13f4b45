"""The state directory: a live save leaves runtime facts that did not change alone, and
writes them again when anything else changed or removed the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.driver import statedir
from harness.driver.statedir import Runtime, StateDir
from harness.model.domain import Domain, DomainError

XML = """<domain type='kvm'><name>d</name><memory unit='KiB'>262144</memory>
<os><type arch='x86_64'>hvm</type></os><devices>
<disk type='file' device='disk'><source file='/a.img'/><target dev='vda' bus='virtio'/></disk>
</devices></domain>"""


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    write = statedir._atomic_write

    def counting(path: Path, text: str) -> None:
        seen.append(path.name)
        write(path, text)

    monkeypatch.setattr(statedir, "_atomic_write", counting)
    return seen


def test_unchanged_runtime_facts_are_not_written_again(tmp_path: Path, writes: list[str]) -> None:
    state = StateDir(tmp_path)
    domain = Domain.from_xml(XML)
    runtime = Runtime(hypervisor="/run/d.sock", profile="v53")
    state.save_live(domain, runtime)
    state.save_live(domain, runtime)
    assert writes == ["d.json"]
    assert state.load_runtime("d") == runtime
    runtime.pending = ["net0"]
    state.save_live(domain, runtime)
    assert writes == ["d.json"] * 2 and state.load_runtime("d") == runtime


def test_runtime_facts_changed_or_removed_behind_are_written_again(
    tmp_path: Path, writes: list[str]
) -> None:
    state = StateDir(tmp_path)
    domain = Domain.from_xml(XML)
    runtime = Runtime(hypervisor="/run/d.sock", profile="v53")
    state.save_live(domain, runtime)
    path = state.runtime_path("d")
    path.write_text(json.dumps({**json.loads(path.read_text()), "state": "paused"}))
    state.save_live(domain, runtime)
    assert state.load_runtime("d") == runtime
    state.remove_live("d")
    state.save_live(domain, runtime)
    assert state.load_runtime("d") == runtime
    path.unlink()
    state.save_live(domain, runtime)
    assert state.load_runtime("d") == runtime and writes == ["d.json"] * 4
    other = StateDir(tmp_path)  # a restarted daemon's: knows nothing it wrote
    other.save_live(domain, Runtime(hypervisor="/run/d.sock", profile="v52"))
    state.save_live(domain, runtime)
    assert state.load_runtime("d") == runtime and len(writes) == 6


def test_directories_removed_behind_the_driver_are_made_again(tmp_path: Path) -> None:
    """The directories are looked at once; a save that finds them gone makes them again."""
    state = StateDir(tmp_path / "root")
    domain = Domain.from_xml(XML)
    runtime = Runtime(hypervisor="/run/d.sock", profile="v53")
    state.save_live(domain, runtime)
    state.save_persistent(domain)
    shutil.rmtree(tmp_path / "root")
    state.save_live(domain, runtime)
    state.save_persistent(domain)
    state.set_save_images("d", [tmp_path / "image"])
    assert state.load_runtime("d") == runtime
    assert state.live_names() == state.persistent_names() == ["d"]
    assert state.save_dir.is_dir() and state.saves_path("d").is_file()


def test_a_failed_write_that_is_not_for_want_of_a_directory_fails(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    state.live_path("d").mkdir()  # a directory where the file must go
    with pytest.raises(DomainError, match="cannot write domain XML"):
        state.save_live(Domain.from_xml(XML), Runtime(hypervisor="/run/d.sock", profile="v53"))
