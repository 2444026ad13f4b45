"""``bdf-harness diff``: fakechv against the real Cloud Hypervisor, exchange by exchange.

For every profile with a real binary (v52, v53, head: ``--chv-binary`` or the shared
builds beside the project, told apart by ``--version`` through
:func:`harness.chv.binary.identify`), every sequence of the chosen sources is sent to a
fresh fakechv of that profile and to a fresh real process, and their answers, events and
exits are compared after the environment is normalised (:mod:`.normalise`). Exit status:
0 when nothing differs, 1 when something does (or a sequence could not run), 2 for bad
input; without root, KVM or any binary it says SKIP with the reason and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from harness.chv.binary import Guest, NotRealChv, identify, shared_chv_dir
from harness.differential.compare import RunComparison, compare_run
from harness.differential.report import DiffResult, ProfileInfo, summary, to_json
from harness.differential.runner import run_sequence
from harness.differential.sequence import Sequence, SequenceError, dedupe
from harness.differential.sides import FAKE, REAL, SideSpec
from harness.errors import HarnessError

__all__ = ["DEFAULT_BINARIES", "EPILOG", "add_parser", "run_command"]

#: the shared builds, by profile
DEFAULT_BINARIES = {
    "v52": "cloud-hypervisor-v52.0",
    "v53": "cloud-hypervisor-v53.0",
    "head": "cloud-hypervisor-head",
}
ALL_SOURCES = ("rules", "scenarios", "generated", "guest")

EPILOG = """\
examples:
  bdf-harness diff
      every source on v52, v53 and head (the shared builds in ../shared/chv): the rule
      tests' requests, the scenario suite's CHV exchanges, 240 generated sequences and
      the guest sequence (it waits for a booted guest); exit 1 on any difference
  bdf-harness diff --profile v53 --source rules --report diff.json
  bdf-harness diff --chv-binary ./cloud-hypervisor --no-guest
      one binary of your own; its --version says which profile it is compared with
  bdf-harness diff --source generated --generated 50 --seed 7
      other generated sequences than CI's
  bdf-harness diff --scenarios-run reports/run.json --source scenarios
      the exchanges of a scenario run made earlier (bdf-harness run ... --report-dir)
  bdf-harness diff --list-normalisations
      what is not counted as a difference, and why
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``diff`` on the subparsers ``sub`` of bdf-harness."""
    p = sub.add_parser(
        "diff",
        help="compare fakechv with the real cloud-hypervisor, exchange by exchange",
        description=(
            "Send the same request sequences to fakechv and to a real cloud-hypervisor "
            "(one fresh process each, the real one as root in a network namespace of its "
            "own) and compare every answer (status line, headers, body; vm.info's PCI "
            "parts structurally), the event monitor's records and the exit status, after "
            "normalising what comes from the environment only."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--profile",
        action="append",
        choices=sorted(DEFAULT_BINARIES),
        help="compare only this profile (repeatable; default: every one with a binary)",
    )
    p.add_argument(
        "--chv-binary",
        action="append",
        metavar="PATH",
        help="a real cloud-hypervisor (repeatable); its --version picks the profile "
        "(default: ../shared/chv/cloud-hypervisor-{v52.0,v53.0,head})",
    )
    p.add_argument(
        "--source",
        action="append",
        metavar="NAME",
        help=f"which sequences (repeatable or comma-separated: {', '.join(ALL_SOURCES)}; "
        "default: all)",
    )
    p.add_argument("--no-guest", action="store_true", help="leave out the guest sequences")
    p.add_argument(
        "--generated",
        type=int,
        default=None,
        metavar="N",
        help="how many generated sequences (default: 240)",
    )
    p.add_argument("--seed", type=int, help="draw other generated sequences (default: CI's)")
    p.add_argument(
        "--rules-recording",
        type=Path,
        metavar="FILE",
        help="the rule tests' requests recorded earlier (pytest -p "
        "harness.differential.recorder --record-sequences FILE); default: record them now",
    )
    p.add_argument(
        "--scenarios-run",
        type=Path,
        metavar="RUN_JSON_OR_DIR",
        help="the run.json of a scenario run; default: run the suite now (in process)",
    )
    p.add_argument(
        "--sequences",
        type=Path,
        action="append",
        metavar="FILE",
        help="also send the sequences of FILE (JSON, as --write-sequences writes them)",
    )
    p.add_argument("--write-sequences", type=Path, metavar="FILE", help="write every sequence")
    p.add_argument("--report", type=Path, metavar="FILE", help="write the JSON report here")
    p.add_argument("--jobs", "-j", type=int, default=3, help="sequences at once (default: 3)")
    p.add_argument("--show", type=int, default=10, metavar="N", help="differences shown")
    p.add_argument("--workdir", type=Path, help="where the sides' files go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep every sequence's files")
    p.add_argument("--guest-kernel", metavar="PATH", help="the guest kernel (default: shared)")
    p.add_argument("--guest-cmdline", metavar="TEXT", help="its command line (default: shared)")
    p.add_argument(
        "--list-normalisations",
        action="store_true",
        help="print what the comparison normalises, with the reason, and exit",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    return p


def _sources(args: argparse.Namespace) -> list[str]:
    chosen: list[str] = []
    for item in args.source or []:
        for name in (n.strip() for n in item.split(",")):
            if name not in ALL_SOURCES:
                raise HarnessError(f"--source {name!r}: expected one of {', '.join(ALL_SOURCES)}")
            chosen.append(name)
    chosen = chosen or list(ALL_SOURCES)
    if args.no_guest:
        chosen = [s for s in chosen if s != "guest"]
    return list(dict.fromkeys(chosen))


def _binaries(args: argparse.Namespace) -> list[ProfileInfo]:
    """The profiles to compare, with their binary or why they are skipped."""
    out: dict[str, ProfileInfo] = {}
    if args.chv_binary:
        for given in args.chv_binary:
            try:
                binary = identify(Path(given))
            except NotRealChv as exc:  # the user named it: bad input
                raise HarnessError(f"--chv-binary {given}: {exc}") from None
            out[binary.profile] = ProfileInfo(binary.profile, str(binary.path), binary.banner)
    else:
        for profile, name in DEFAULT_BINARIES.items():
            path = shared_chv_dir() / name
            try:
                binary = identify(path)
            except NotRealChv as exc:
                out[profile] = ProfileInfo(profile, str(path), skipped=str(exc))
                continue
            if binary.profile != profile:
                out[profile] = ProfileInfo(
                    profile, str(path), skipped=f"{path} is {binary.banner} ({binary.profile})"
                )
                continue
            out[profile] = ProfileInfo(profile, str(binary.path), binary.banner)
    if args.profile:
        for name in args.profile:
            if name not in out:
                raise HarnessError(f"--profile {name}: no --chv-binary of that release given")
        return [out[name] for name in dict.fromkeys(args.profile)]
    return list(out.values())


def _host_unusable() -> str | None:
    if os.geteuid() != 0:
        return "not root (real CHV needs root for /dev/kvm and its taps)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no usable /dev/kvm"
    return None


def collect_sequences(
    args: argparse.Namespace, sources: list[str], workdir: Path, say: Callable[[str], None]
) -> tuple[list[Sequence], dict[str, dict[str, int]]]:
    """Every sequence of the chosen sources (duplicates run once), and what each source
    left out."""
    notes: dict[str, dict[str, int]] = {}
    found: list[Sequence] = []
    if "rules" in sources:
        from harness.differential.rules import rule_sequences

        found += rule_sequences(args.rules_recording, workdir, progress=say)
    if "scenarios" in sources:
        from harness.differential.scenarios import scenario_sequences

        got = scenario_sequences(args.scenarios_run, progress=say)
        found += got.sequences
        if got.left_out:
            notes["scenarios"] = dict(got.left_out)
    if "generated" in sources:
        from harness.differential.generate import DEFAULT_COUNT, generate

        count = DEFAULT_COUNT if args.generated is None else args.generated
        if count < 0:
            raise HarnessError(f"--generated {count}: must be 0 or more")
        found += generate(count, args.seed)
    if "guest" in sources:
        from harness.differential.guest import guest_sequences

        found += guest_sequences()
    for path in args.sequences or []:
        found += load_sequences(path)
    unique: list[Sequence] = []
    for source in dict.fromkeys(s.source for s in found):
        kept, dropped = dedupe(s for s in found if s.source == source)
        unique += kept
        if dropped:
            notes.setdefault(source, {})["duplicate sequences run once"] = dropped
    return unique, notes


def load_sequences(path: Path) -> list[Sequence]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise HarnessError(f"{path}: not JSON: {exc}") from None
    items = data.get("sequences") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise SequenceError(f"{path}: expected a list of sequences or {{'sequences': [...]}}")
    return [Sequence.from_json(item, f"{path}: sequence {i + 1}") for i, item in enumerate(items)]


async def _run_all(
    plan: list[tuple[str, Sequence]],
    specs: dict[str, SideSpec],
    workdir: Path,
    guest: Guest,
    jobs: int,
    keep: bool,
    say: Callable[[str], None],
    done: list[RunComparison],
) -> None:
    slots = asyncio.Semaphore(jobs)
    boots = asyncio.Semaphore(2)  # a booting guest burns a core for ~45 s
    started = time.monotonic()
    last = [started]

    async def one(index: int, profile: str, seq: Sequence) -> None:
        from harness.differential.guest import FAKE_EJECT

        fake = specs[profile]
        if seq.guest:
            fake = replace(fake, eject=FAKE_EJECT)
        side_specs = {FAKE: fake, REAL: replace(fake, kind=REAL, eject="never")}
        where = workdir / f"{profile}-{index:04d}"
        async with boots if seq.guest else slots:
            run = await run_sequence(seq, profile, side_specs, where, guest)
        done.append(compare_run(run))
        if not keep and not done[-1].differences and not run.error:
            shutil.rmtree(where, ignore_errors=True)
        now = time.monotonic()
        if now - last[0] > 10 or len(done) == len(plan):
            last[0] = now
            differing = sum(1 for r in done if r.differences or r.run.error)
            say(f"{len(done)}/{len(plan)} sequence runs, {differing} differ ({now - started:.0f}s)")

    order = sorted(range(len(plan)), key=lambda i: not plan[i][1].guest)  # guests first
    await asyncio.gather(*(one(i, *plan[i]) for i in order))


def run_command(args: argparse.Namespace, out: TextIO) -> int:
    """``bdf-harness diff`` (HarnessError for bad input: the caller exits 2)."""
    from harness.differential.normalise import format_table

    if args.list_normalisations:
        print(format_table(), file=out)
        return 0
    if args.jobs < 1:
        raise HarnessError(f"--jobs must be at least 1, not {args.jobs}")
    say: Callable[[str], None] = (
        (lambda _t: None)
        if args.quiet
        else (lambda t: print(f"diff: {t}", file=sys.stderr, flush=True))
    )
    sources = _sources(args)
    profiles = _binaries(args)
    reason = _host_unusable()
    runnable = [p for p in profiles if not p.skipped]
    if reason or not runnable:
        why = reason or "; ".join(f"{p.name}: {p.skipped}" for p in profiles) or "no binary"
        print(f"SKIP: bdf-harness diff: real Cloud Hypervisor cannot run here: {why}", file=out)
        return 0
    guest = Guest.find(args.guest_kernel, args.guest_cmdline)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bdf-diff-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    result = DiffResult(profiles)
    try:
        sequences, result.notes = collect_sequences(args, sources, workdir, say)
        if args.write_sequences is not None:
            args.write_sequences.write_text(
                json.dumps({"sequences": [s.to_json() for s in sequences]}, indent=1)
            )
        specs = {p.name: SideSpec(FAKE, p.name, Path(p.binary)) for p in runnable}
        plan = [(p.name, s) for p in runnable for s in sequences if s.for_profile(p.name)]
        say(f"{len(sequences)} sequences x {len(runnable)} profiles: {len(plan)} runs")
        try:
            asyncio.run(
                _run_all(plan, specs, workdir, guest, args.jobs, args.keep, say, result.runs)
            )
        except KeyboardInterrupt:
            result.interrupted = True
    finally:
        result.seconds = time.monotonic() - t0
        if not args.keep and args.workdir is None and not result.differing:
            shutil.rmtree(workdir, ignore_errors=True)
    order = {p.name: i for i, p in enumerate(profiles)}
    result.runs.sort(
        key=lambda r: (order.get(r.run.profile, 99), r.run.sequence.source, r.run.sequence.name)
    )
    print(summary(result, show=args.show), file=out)
    if result.differing and not args.keep:
        print(f"files of the differing sequences: {workdir}", file=out)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(to_json(result), indent=1))
        print(f"report (json): {args.report}", file=out)
    if result.interrupted:
        return 130
    return 0 if result.ok else 1
