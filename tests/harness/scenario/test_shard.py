"""Shards of a run (``bdf-harness run --shard I/N``) and merging them back
(``bdf-harness merge``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.cli import main
from harness.scenario.results import FAILED, PASSED, RunResult, ScenarioResult
from harness.scenario.shard import Shard, ShardError, merge_runs, parse_shard

ROOT = Path(__file__).resolve().parents[3]
LIFECYCLE = ROOT / "scenarios" / "lifecycle"


@pytest.mark.parametrize("text", ["", "2", "0/3", "4/3", "1/0", "a/b", "-1/2", "1/2/3"])
def test_bad_shard_is_refused_with_the_syntax(text: str) -> None:
    with pytest.raises(ShardError, match=r"I/N|between 1 and N"):
        parse_shard(text)


@given(st.integers(0, 40), st.integers(1, 9))
def test_the_shards_cover_the_plan_once(size: int, count: int) -> None:
    items = list(range(size))
    parts = [Shard(i, count).select(items) for i in range(1, count + 1)]
    assert sorted(x for part in parts for x in part) == items
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def _run(shard: str, names: list[str], target: str = "reference") -> RunResult:
    return RunResult(
        [ScenarioResult(n, f"{n}.yaml", status=FAILED if n == "x" else PASSED) for n in names],
        target=target,
        seconds=float(len(names)),
        planned=len(names),
        shard=shard,
    )


def test_merge_puts_the_plan_order_back() -> None:
    plan = [f"s{i}" for i in range(7)]
    shards = [(f"r{i}", _run(f"{i}/3", Shard(i, 3).select(plan))) for i in (3, 1, 2)]
    merged = merge_runs(shards)
    assert [s.name for s in merged.scenarios] == plan
    assert merged.planned == 7 and merged.seconds == 3.0 and merged.shard == ""


def test_merge_refuses_what_is_not_one_run() -> None:
    with pytest.raises(ShardError, match="2/2 missing"):
        merge_runs([("a", _run("1/2", ["s0"]))])
    with pytest.raises(ShardError, match="also in a"):
        merge_runs([("a", _run("1/2", ["s0"])), ("b", _run("1/2", ["s1"]))])
    with pytest.raises(ShardError, match="different runs"):
        merge_runs([("a", _run("1/2", ["s0"])), ("b", _run("2/3", ["s1"]))])
    with pytest.raises(ShardError, match="different targets"):
        merge_runs([("a", _run("1/2", ["s0"])), ("b", _run("2/2", ["s1"], "libvirt"))])
    with pytest.raises(ShardError, match="not the result of a shard"):
        merge_runs([("a", _run("", ["s0"]))])


def test_run_shards_then_merge_gives_the_whole_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = tmp_path / "whole"
    assert main(["run", str(LIFECYCLE), "--jobs", "1", "--report-dir", str(whole)]) == 0
    dirs = []
    for i in (1, 2):
        out = tmp_path / f"r{i}"
        code = main(["run", str(LIFECYCLE), "--jobs", "1", "--shard", f"{i}/2"])
        assert code == 0
        assert f"(shard {i}/2)" in capsys.readouterr().out
        main(["run", str(LIFECYCLE), "--jobs", "1", "--shard", f"{i}/2", "--report-dir", str(out)])
        dirs.append(out)
    merged = tmp_path / "merged"
    assert main(["merge", *map(str, dirs), "--report-dir", str(merged)]) == 0
    assert "OK:" in capsys.readouterr().out

    def names(path: Path) -> list[tuple[str, str, str]]:
        data = json.loads((path / "run.json").read_text())
        return [(s["file"], s["profile"], s["status"]) for s in data["scenarios"]]

    assert names(merged) == names(whole) and len(names(whole)) > 2


def test_merge_reports_bad_input_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["merge", str(tmp_path / "nothing")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "run.json"
    bad.write_text("[1, 2]")
    assert main(["merge", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not the run.json of a run" in err and "Traceback" not in err
    assert main(["run", str(LIFECYCLE), "--shard", "3/2"]) == 2
    assert "between 1 and N" in capsys.readouterr().err
