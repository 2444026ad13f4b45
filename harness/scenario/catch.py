"""The catch matrix: which scenarios catch each driver quirk.

``bdf-harness quirks`` runs the scenario suite on the in-process reference target
once clean, then once per quirk of :mod:`harness.driver.quirks` (each alone), then
with the ``cyberus-libvirt`` preset on the ``cyberus`` and ``v53`` profiles (each
against a clean run on the same profile: a scenario written for another release may
fail there clean, and only those that pass clean can catch). A run *catches* a quirk
when a scenario that passes clean fails (or errors) with it. The clean run on each
scenario's own profiles must pass: a suite that fails the reference driver cannot
judge another one.

It writes a Markdown table (``--markdown FILE``, e.g. ``docs/cyberus-quirks.md``) and,
with ``--report-dir``, ``quirks.md``, ``quirks.html`` and ``quirks.json`` there; it
prints ``caught N/N`` and exits 1 when a quirk goes uncaught or a clean run fails.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from harness.driver.quirks import ENV, PRESETS, QUIRKS
from harness.scenario.results import ERROR, FAILED, PASSED, UNSUPPORTED, RunResult

__all__ = ["Row", "add_parser", "run_command", "run_matrix"]

PRESET = "cyberus-libvirt"
PRESET_PROFILES = ("cyberus", "v53")


@dataclass
class Row:
    """One quirk (or the preset on one profile) and what caught it."""

    name: str
    summary: str
    source: str
    profile: str = ""  # "" = each scenario's own profiles
    caught_by: list[str] = field(default_factory=list)
    #: the first catching scenario's failure, which names device, BDF and side
    example: str = ""
    #: with ``--soak``: the property machine's first failure ("" = it caught nothing)
    machine: str = ""
    machine_seconds: float = 0.0

    @property
    def caught(self) -> bool:
        return bool(self.caught_by)


@contextmanager
def _quirks_env(value: str | None) -> Iterator[None]:
    old = os.environ.get(ENV)
    if value is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old


def _key(result: Any) -> str:
    """The scenario file (what ``bdf-harness replay`` takes) and the profile."""
    return f"{result.file} [{result.profile}]"


def _run(paths: Sequence[Path], quirks: str | None, profile: str | None, jobs: int) -> RunResult:
    from harness.scenario.batch import run_paths

    with _quirks_env(quirks):
        return run_paths(paths, target="reference", profile=profile, jobs=jobs)


def _clean_failures(run: RunResult) -> list[str]:
    return [
        f"{_key(r)}: {r.failure}" for r in run.scenarios if r.status not in (PASSED, UNSUPPORTED)
    ]


def _catches(clean: RunResult, quirky: RunResult, row: Row) -> None:
    passed = {_key(r) for r in clean.scenarios if r.status == PASSED}
    for result in quirky.scenarios:
        key = _key(result)
        if key in passed and result.status in (FAILED, ERROR):
            row.caught_by.append(key)
            if not row.example:
                row.example = f"{key}: {result.failure or result.status}"


#: the simulated guest of the machine per quirk: an early free shows only when the
#: guest takes its time (``never``: every live detach times out in the reference)
_MACHINE_EJECT = {"detach-frees-early": "never"}


def _soak(row: Row, seconds: float, report_dir: Path) -> None:
    """The property machine with ``row``'s quirk, until its first failure or ``seconds``."""
    from harness.driver.quirks import parse_quirks
    from harness.explore.soak import soak

    result = soak(
        seconds,
        eject=_MACHINE_EJECT.get(row.name, "immediate"),
        report_dir=report_dir,
        max_failures=1,
        quirks=parse_quirks(row.name),
    )
    row.machine_seconds = result.seconds
    for run in result.failures:
        if run.failure is not None:
            lines = (run.failure.failure or "").splitlines()
            row.machine = lines[1].strip() if len(lines) > 1 else (lines[0] if lines else "")
            break


def run_matrix(
    paths: Sequence[Path],
    *,
    jobs: int = 2,
    progress: Callable[[str], None] | None = None,
    soak_seconds: float = 0.0,
    report_dir: Path = Path("reports"),
) -> tuple[list[Row], list[str]]:
    """The rows, and the failures of the clean runs (empty when the suite is sound).
    ``soak_seconds`` > 0: also the property machine per quirk, for at most that long."""
    say = progress or (lambda _text: None)
    say("clean reference driver, each scenario's own profiles")
    clean = _run(paths, None, None, jobs)
    problems = _clean_failures(clean)
    rows = []
    for quirk in QUIRKS.values():
        say(f"quirk {quirk.name}")
        row = Row(quirk.name, quirk.summary, quirk.source)
        _catches(clean, _run(paths, quirk.name, None, jobs), row)
        if soak_seconds > 0:
            say(f"quirk {quirk.name}: the property machine, up to {soak_seconds:g}s")
            _soak(row, soak_seconds, report_dir)
        rows.append(row)
    for profile in PRESET_PROFILES:
        say(f"preset {PRESET} on profile {profile} (and a clean run on it)")
        # a scenario written for another release may fail clean under this profile:
        # only those that pass clean here can catch anything
        clean_on = _run(paths, None, profile, jobs)
        row = Row(
            PRESET,
            f"every quirk: {', '.join(PRESETS[PRESET])}",
            "cyberus-technology/libvirt",
            profile,
        )
        _catches(clean_on, _run(paths, PRESET, profile, jobs), row)
        rows.append(row)
    return rows, problems


# ----------------------------------------------------------------------------- output


def format_markdown(rows: Sequence[Row], problems: Sequence[str]) -> str:
    quirks = [r for r in rows if not r.profile]
    caught = sum(r.caught for r in quirks)
    lines = [
        "# Driver quirks and the scenarios that catch them",
        "",
        "Generated by `bdf-harness quirks` (`tox -e quirks`): the scenario suite on the "
        "in-process reference driver, once clean and once per quirk "
        "(`harness/driver/quirks.py`); a scenario catches a quirk when it passes clean "
        "and fails with it. Replay one with `bdf-harness replay FILE --quirks NAME`.",
        "",
        f"Caught: {caught}/{len(quirks)} quirks.",
        "",
        "| quirk | what the driver does | the fork's source | caught by |",
        "|---|---|---|---|",
    ]
    for row in rows:
        name = f"`{row.name}`" + (f" on `{row.profile}`" if row.profile else "")
        found = (
            f"{len(row.caught_by)}: "
            + ", ".join(row.caught_by[:8])
            + (", ..." if len(row.caught_by) > 8 else "")
            if row.caught_by
            else "**nothing**"
        )
        lines.append(f"| {name} | {row.summary} | {row.source} | {found} |")
    soaked = [r for r in quirks if r.machine_seconds > 0]
    if soaked:
        lines += ["", "The property machine with each quirk (`--soak`):", ""]
        for row in soaked:
            found = (
                f"caught in {row.machine_seconds:.0f}s: {row.machine}"
                if row.machine
                else f"**nothing** in {row.machine_seconds:.0f}s"
            )
            lines.append(f"- `{row.name}`: {found}")
    lines += ["", "First failure of each:", ""]
    for row in rows:
        if row.example:
            where = f" on {row.profile}" if row.profile else ""
            lines.append(f"- `{row.name}`{where}: {row.example}")
    if problems:
        lines += ["", "The clean reference driver FAILED:", ""]
        lines += [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


def format_html(rows: Sequence[Row], problems: Sequence[str]) -> str:
    esc = html.escape
    body = [
        "<table><tr><th>quirk</th><th>profile</th><th>what the driver does</th>"
        "<th>caught by</th><th>first failure</th></tr>"
    ]
    for row in rows:
        cls = "ok" if row.caught else "bad"
        body.append(
            f'<tr class="{cls}"><td>{esc(row.name)}</td><td>{esc(row.profile or "own")}</td>'
            f"<td>{esc(row.summary)}</td><td>{esc(', '.join(row.caught_by) or 'NOTHING')}</td>"
            f"<td>{esc(row.example)}</td></tr>"
        )
    body.append("</table>")
    if problems:
        body.append("<h2>The clean reference driver failed</h2><ul>")
        body += [f"<li>{esc(p)}</li>" for p in problems]
        body.append("</ul>")
    style = "td,th{border:1px solid #999;padding:4px}.bad{background:#fcc}.ok{background:#efe}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>driver quirks</title>"
        f"<style>{style}</style></head><body><h1>Driver quirks</h1>{''.join(body)}"
        "</body></html>\n"
    )


# ----------------------------------------------------------------------------- command


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "quirks",
        help="run the suite once per driver quirk and show which scenarios catch each",
        description="Run the scenario suite on the reference driver clean, then once per "
        "driver quirk (a named deviation of the Cyberus libvirt fork, "
        "harness/driver/quirks.py), then with the preset cyberus-libvirt on the cyberus "
        "and v53 profiles; print which scenarios catch each quirk and 'caught N/N'. "
        "Exit 1 when a quirk goes uncaught or the clean driver fails.",
        epilog="examples:\n"
        "  bdf-harness quirks --list\n"
        "  bdf-harness quirks --markdown docs/cyberus-quirks.md\n"
        "  bdf-harness quirks --report-dir reports/quirks --soak 120",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", default=["scenarios"], metavar="PATH")
    p.add_argument("--jobs", "-j", type=int, default=2, help="scenarios in parallel")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="write the table here")
    p.add_argument("--report-dir", type=Path, help="write quirks.{md,html,json} here")
    p.add_argument("--list", action="store_true", help="list the quirks and presets")
    p.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also run the property machine with each quirk for up to SECONDS (it stops "
        "at its first failure; reproducers go to --report-dir or reports/)",
    )


def run_command(args: argparse.Namespace, out: TextIO) -> int:
    if args.list:
        for quirk in QUIRKS.values():
            print(f"{quirk.name}\n    {quirk.summary}\n    source: {quirk.source}", file=out)
        for name, members in PRESETS.items():
            print(f"{name} (preset): {', '.join(members)}", file=out)
        return 0
    paths = [Path(p) for p in args.paths]

    def say(text: str) -> None:
        print(f"quirks: {text}", file=sys.stderr, flush=True)

    rows, problems = run_matrix(
        paths,
        jobs=args.jobs,
        progress=say,
        soak_seconds=args.soak,
        report_dir=args.report_dir or Path("reports"),
    )
    text = format_markdown(rows, problems)
    if args.markdown is not None:
        args.markdown.write_text(text, encoding="utf-8")
    if args.report_dir is not None:
        args.report_dir.mkdir(parents=True, exist_ok=True)
        (args.report_dir / "quirks.md").write_text(text, encoding="utf-8")
        (args.report_dir / "quirks.html").write_text(format_html(rows, problems), "utf-8")
        data = [vars(r) | {"caught": r.caught} for r in rows]
        (args.report_dir / "quirks.json").write_text(json.dumps(data, indent=2), "utf-8")
    for row in rows:
        where = f" on {row.profile}" if row.profile else ""
        mark = "caught" if row.caught else "MISSED"
        machine = ""
        if row.machine_seconds > 0:
            machine = ", the machine: " + ("caught" if row.machine else "MISSED")
        print(f"{mark:7} {row.name}{where}: {len(row.caught_by)} scenario(s){machine}", file=out)
    quirks = [r for r in rows if not r.profile]
    caught = sum(r.caught for r in quirks)
    print(f"caught {caught}/{len(quirks)}", file=out)
    for problem in problems:
        print(f"bdf-harness: clean reference driver failed: {problem}", file=sys.stderr)
    machine_missed = [r.name for r in quirks if r.machine_seconds > 0 and not r.machine]
    if args.soak > 0:
        print(f"the machine caught {len(quirks) - len(machine_missed)}/{len(quirks)}", file=out)
    ok = all(r.caught for r in rows) and not problems  # (the quirks' rows and the preset's)
    return 0 if ok and not machine_missed else 1
