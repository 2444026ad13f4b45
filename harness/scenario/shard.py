"""Shards of a run, and merging their results back into one run.

``bdf-harness run --shard I/N`` runs the I-th of N deterministic parts of the planned
runs (every N-th (file, profile) pair of the plan, starting at the I-th), so a CI
system can spread a slow suite over N workers; ``bdf-harness merge`` puts the
``run.json`` files of the N shards back together into one run with one set of reports.
The plan is sorted (file, then the scenario's profile order), so every worker given
the same paths and files picks the same part, and the N parts cover the plan once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from harness.errors import HarnessError
from harness.scenario.results import RunResult

__all__ = ["Shard", "ShardError", "merge_runs", "parse_shard"]

T = TypeVar("T")

_SHARD = re.compile(r"^\s*(\d{1,6})\s*/\s*(\d{1,6})\s*$")


class ShardError(HarnessError):
    """A bad ``--shard`` value, or shard results that do not make one run."""


@dataclass(frozen=True)
class Shard:
    """The ``index``-th (1-based) of ``count`` parts of a run."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, items: Sequence[T]) -> list[T]:
        """This shard's part of ``items``: every ``count``-th, from the ``index``-th."""
        return [item for i, item in enumerate(items) if i % self.count == self.index - 1]


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> Shard(2, 4); :class:`ShardError` saying what is wrong otherwise."""
    match = _SHARD.match(text or "")
    if match is None:
        raise ShardError(f"--shard takes I/N (e.g. 2/4), not {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ShardError(f"--shard {text}: I must be between 1 and N (N at least 1)")
    return Shard(index, count)


def merge_runs(runs: Sequence[tuple[str, RunResult]]) -> RunResult:
    """One run from the results of the shards of a run (``(where, result)`` pairs, where
    names the file in messages).

    The shards must be of one target and one shard count, each present once; the merged
    run lists the scenarios in plan order, took as long as its slowest shard, and is
    interrupted if any shard was.
    """
    if not runs:
        raise ShardError("nothing to merge")
    counts: set[int] = set()
    seen: dict[int, str] = {}
    for where, run in runs:
        if not run.shard:
            raise ShardError(f"{where}: not the result of a shard (run without --shard)")
        shard = parse_shard(run.shard)
        counts.add(shard.count)
        if shard.index in seen:
            raise ShardError(f"{where}: shard {shard} is also in {seen[shard.index]}")
        seen[shard.index] = where
    if len(counts) > 1:
        raise ShardError(f"the results are shards of different runs (N = {sorted(counts)})")
    targets = {run.target for _where, run in runs}
    if len(targets) > 1:
        raise ShardError(f"the shards ran on different targets: {', '.join(sorted(targets))}")
    (count,) = counts
    missing = sorted(set(range(1, count + 1)) - set(seen))
    if missing:
        raise ShardError(
            f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing: "
            "merge the results of all N shards"
        )
    ordered = sorted(runs, key=lambda pair: parse_shard(pair[1].shard).index)
    # shard i holds plan positions i-1, i-1+N, ...: interleave them back into plan order
    columns = [run.scenarios for _where, run in ordered]
    scenarios = []
    for row in range(max(len(c) for c in columns)):
        scenarios += [c[row] for c in columns if row < len(c)]
    merged = RunResult(
        scenarios=scenarios,
        target=ordered[0][1].target,
        started=min((run.started for _w, run in ordered if run.started), default=""),
        seconds=max(run.seconds for _w, run in ordered),
        interrupted=any(run.interrupted for _w, run in ordered),
        planned=sum(run.planned for _w, run in ordered),
    )
    hypervisors: dict[str, str] = {}
    for _where, run in ordered:
        hypervisors.update(run.hypervisors)
    merged.hypervisors = hypervisors
    return merged
