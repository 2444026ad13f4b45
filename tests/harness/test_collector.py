"""A run's collector setting: the youngest generation grows further, only within the
block, and a threshold already higher is kept."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from harness.collector import YOUNG, fewer_collections


def test_fewer_collections_within_the_block_only() -> None:
    old = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with fewer_collections():
            assert gc.get_threshold() == (YOUNG, 10, 10)
        assert gc.get_threshold() == (700, 10, 10)
        with pytest.raises(RuntimeError), fewer_collections():
            raise RuntimeError("a failed run")
        assert gc.get_threshold() == (700, 10, 10)
        gc.set_threshold(YOUNG * 5, 3, 4)
        with fewer_collections():
            assert gc.get_threshold() == (YOUNG * 5, 3, 4)  # never more often
    finally:
        gc.set_threshold(*old)


def test_a_scenario_run_collects_less(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.scenario import batch
    from harness.scenario.results import ScenarioResult

    seen: list[tuple[int, int, int]] = []

    def run_one(path: str, profile: str, target: str, *rest: object) -> ScenarioResult:
        seen.append(gc.get_threshold())
        return batch.load_error(Path(path), "not run", target)

    monkeypatch.setattr(batch, "_run_one", run_one)
    before = gc.get_threshold()
    batch.run_paths([Path("scenarios/lifecycle")], jobs=1)
    assert seen and all(threshold[0] >= YOUNG for threshold in seen)
    assert gc.get_threshold() == before
