"""Wall time of the whole scenario suite and scenarios per second.

``python -m harness.scenario.bench [PATHS...] [--jobs N] [--target T] [--repeat R]``
runs the suite (default ``scenarios/``) like ``bdf-harness run`` and prints one line per
repetition plus the best figure, then the time to write the best run's reports
(``index.html``, ``junit.xml``, ``summary.md``, ``run.json``, as ``--report-dir`` does).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fakechv.loadavg import load_average
from harness.errors import HarnessError
from harness.scenario.results import RunResult

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from harness.scenario.batch import run_paths
    from harness.targets import TARGETS

    parser = argparse.ArgumentParser(
        prog="python -m harness.scenario.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("paths", nargs="*", default=[str(Path("scenarios"))], metavar="PATH")
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--target", default="reference", choices=sorted(TARGETS))
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1:
        parser.error("--jobs and --repeat must be at least 1")
    best = None
    kept = None
    for index in range(args.repeat):
        started = time.perf_counter()
        try:
            run = run_paths(args.paths, target=args.target, jobs=args.jobs)
        except HarnessError as exc:
            print(f"bench_scenarios: error: {exc}", file=sys.stderr)
            return 2
        wall = time.perf_counter() - started
        counts = run.counts()
        ran = len(run.scenarios) - counts.get("unsupported", 0)
        rate = ran / wall if wall > 0 else 0.0
        if best is None or wall < best:
            best, kept = wall, run
        print(
            f"run {index + 1}: {len(run.scenarios)} scenario runs ({ran} executed, "
            f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
            f"{counts.get('error', 0)} error) on {args.target} with {args.jobs} jobs: "
            f"{wall:.2f} s wall, {rate:.1f} scenarios/s"
        )
    print(f"best: {best:.2f} s for the suite (load average {load_average()})")
    if kept is not None:
        print(f"reports: {_report_seconds(kept):.2f} s to write them for that run")
    return 0


def _report_seconds(run: RunResult) -> float:
    from harness.reports.writer import write_reports

    with tempfile.TemporaryDirectory() as reports:
        started = time.perf_counter()
        write_reports(run, Path(reports))
        return time.perf_counter() - started


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
