"""Every scenario under scenarios/ runs against the reference driver (in process).

A scenario that does not load, fails or errors fails this test, naming the step; one
that needs a feature the reference target lacks (migration) must say so in `requires:`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.scenario.batch import run_scenario_sync
from harness.scenario.load import load_scenario
from harness.scenario.results import PASSED, UNSUPPORTED
from harness.targets.reference import ReferenceTarget

ROOT = Path(__file__).resolve().parents[3] / "scenarios"
FILES = sorted(ROOT.rglob("*.yaml"))


def test_the_suite_is_there() -> None:
    themes = {p.parent.name for p in FILES}
    assert {"hotplug", "lifecycle", "validation", "chv-versions", "migration"} <= themes
    names = " ".join(load_scenario(p).name for p in FILES)
    for ident in [f"A{i}" for i in range(1, 9)] + ["I1", "I2", "I3", "I4"]:
        assert f"{ident} " in names, ident
    for ident in [f"B{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 7)]:
        assert f"{ident} " in names, ident


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_scenario(path: Path) -> None:
    results = run_scenario_sync(path)
    assert results
    for result in results:
        if result.status == UNSUPPORTED:
            missing = set(load_scenario(path).requires) - ReferenceTarget.features
            assert missing, f"{path}: unsupported although the target has every feature"
            continue
        assert result.status == PASSED, f"[{result.profile}] {result.failure}"
