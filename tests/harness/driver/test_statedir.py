"""The state directory: a live save leaves runtime facts that did not change alone, and
writes them again when anything else changed or removed the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.driver import statedir
from harness.driver.statedir import Runtime, StateDir
from harness.model.domain import Domain

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
