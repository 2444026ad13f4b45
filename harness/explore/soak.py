"""Soak: run the property state machine for a time budget.

``python -m harness.explore.soak --minutes 2`` (or ``--seconds 30``) runs
:mod:`harness.explore.machine` in batches of random examples until the budget is spent, then
prints the steps explored, the steps per second and every reproducer written (one
scenario file per failure, under ``--report-dir``, default ``reports/``). The exit status
is 1 if any failure was found, 0 otherwise; 2 for bad options.

By default the machine steers around the driver desyncs that are known and still open
(:data:`harness.explore.vocabulary.OPEN_DESYNCS`); ``--known-desyncs`` explores them too.
``--migration`` runs two daemons and adds migration.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import settings

from fakechv.loadavg import load_average
from harness.chv.capabilities import CAPABILITIES
from harness.driver.quirks import parse_quirks
from harness.errors import HarnessError
from harness.explore.machine import BdfMachine
from harness.explore.run import (
    MachineRun,
    close_loop,
    machine_class,
    register_profiles,
    run_machine,
)
from harness.explore.vocabulary import OPEN_DESYNCS
from harness.lifetime import check_interrupt, interrupts_raise

__all__ = ["SoakResult", "main", "soak"]


class SoakResult:
    """Totals of a soak run."""

    def __init__(self) -> None:
        self.steps = 0
        self.seconds = 0.0
        #: of ``seconds``, those in the driver, fakechv and the checks (MachineRun)
        self.system_seconds = 0.0
        self.batches = 0
        self.failures: list[MachineRun] = []
        #: stopped by Ctrl-C or SIGTERM before the budget was spent
        self.interrupted = False

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


def soak(
    seconds: float,
    *,
    profile: str = "v53",
    eject: str = "immediate",
    report_dir: Path = Path("reports"),
    known_desyncs: bool = False,
    migration: bool = False,
    batch: int = 25,
    step_count: int = 50,
    max_failures: int = 5,
    progress: bool = False,
    quirks: frozenset[str] = frozenset(),
) -> SoakResult:
    """Run the machine in batches of ``batch`` examples until ``seconds`` have passed."""
    register_profiles()
    machine = machine_class(
        profile,
        eject=eject,
        avoid=frozenset() if known_desyncs else OPEN_DESYNCS,
        migration=migration,
        quirks=quirks,
    )
    config = settings(
        settings.get_profile("soak"), max_examples=batch, stateful_step_count=step_count
    )
    result = SoakResult()
    started = time.perf_counter()
    steps_before = BdfMachine.steps_run
    try:
        with interrupts_raise():
            _batches(result, started, seconds, machine, config, report_dir, max_failures, progress)
    except KeyboardInterrupt:
        result.interrupted = True
        result.steps = BdfMachine.steps_run - steps_before  # the cut batch's steps too
    finally:
        close_loop()
        for workdir in list(BdfMachine.live_workdirs):  # an interrupted example's state
            shutil.rmtree(workdir, ignore_errors=True)
            BdfMachine.live_workdirs.discard(workdir)
    result.seconds = time.perf_counter() - started
    return result


def _batches(
    result: SoakResult,
    started: float,
    seconds: float,
    machine: Any,
    config: Any,
    report_dir: Path,
    max_failures: int,
    progress: bool,
) -> None:
    while time.perf_counter() - started < seconds and len(result.failures) < max_failures:
        check_interrupt()
        run = run_machine(machine, settings_=config, report_dir=report_dir)
        check_interrupt()
        result.batches += 1
        result.steps += run.steps
        result.system_seconds += run.system_seconds
        if run.failure is not None:
            result.failures.append(run)
        if progress:
            elapsed = time.perf_counter() - started
            print(
                f"  {elapsed:6.1f}s  {result.steps} steps, {len(result.failures)} failure(s)",
                file=sys.stderr,
            )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.explore.soak",
        description="Run the BDF property state machine for a time budget.",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="time budget in minutes")
    budget.add_argument("--seconds", type=float, help="time budget in seconds (default 60)")
    p.add_argument(
        "--profile", default="v53", help=f"CHV profile ({', '.join(CAPABILITIES)}; default v53)"
    )
    p.add_argument(
        "--eject",
        default="immediate",
        choices=("immediate", "never"),
        help="when the simulated guest ejects removed devices (never: detaches time out)",
    )
    p.add_argument("--report-dir", type=Path, default=Path("reports"), help="reproducers go here")
    p.add_argument(
        "--known-desyncs",
        action="store_true",
        help=f"also explore the open driver desyncs ({', '.join(sorted(OPEN_DESYNCS))})",
    )
    p.add_argument("--migration", action="store_true", help="two daemons, with migration")
    p.add_argument("--steps", type=int, default=50, help="steps per example (default 50)")
    p.add_argument("--progress", action="store_true", help="print totals after each batch")
    p.add_argument(
        "--quirks",
        metavar="NAME,...",
        help="run the driver with these deliberate deviations (bdf-harness quirks --list); "
        "the soak then shows how soon the invariants catch them",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    seconds = args.minutes * 60 if args.minutes is not None else args.seconds
    if seconds is None:
        seconds = 60.0
    if seconds <= 0 or args.steps < 1:
        print("soak: the time budget and --steps must be positive", file=sys.stderr)
        return 2
    try:
        quirks = parse_quirks(args.quirks)
        result = soak(
            seconds,
            profile=args.profile,
            eject=args.eject,
            report_dir=args.report_dir,
            known_desyncs=args.known_desyncs,
            migration=args.migration,
            step_count=args.steps,
            progress=args.progress,
            quirks=quirks,
        )
    except HarnessError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    hosts = "two hosts with migration" if args.migration else "one host"
    with_quirks = f", driver quirks {','.join(sorted(quirks))}" if quirks else ""
    print(f"profile {args.profile}, eject {args.eject}, {hosts}{with_quirks}")
    if result.interrupted:
        print("interrupted: the totals cover the batches that finished")
    print(f"steps explored: {result.steps} in {result.seconds:.1f}s ({result.batches} batches)")
    print(f"steps per second: {result.steps_per_second:.0f} (load average {load_average()})")
    outside = result.seconds - result.system_seconds
    if result.steps and outside > 0 and not result.interrupted:
        print(
            f"per step: {result.system_seconds / result.steps * 1000:.2f} ms in the driver, "
            f"fakechv and the checks, {outside / result.steps * 1000:.2f} ms outside them "
            "(hypothesis drawing, choosing rules and shrinking, the rules' preconditions): "
            f"that part alone allows at most {result.steps / outside:.0f} steps/s"
        )
    print(f"reproducers written: {sum(1 for f in result.failures if f.reproducer)}")
    for run in result.failures:
        assert run.failure is not None
        first = (run.failure.failure or "").splitlines()
        print(
            f"  {run.reproducer or '(not written)'}: {first[1].strip() if len(first) > 1 else ''}"
        )
    if result.interrupted:
        return 130
    return 1 if result.failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
