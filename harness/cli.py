"""``bdf-harness``: run, list, replay and validate BDF scenarios.

Exit status: 0 when everything passed (unsupported scenarios do not count as failures),
1 when a scenario failed or could not run, 2 for bad input (a file that does not load, an
unknown option value); bad input is one line naming the file, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from harness.errors import HarnessError
from harness.progress import Progress
from harness.scenario.files import DocumentAccess
from harness.scenario.load import find_scenarios, load_scenario
from harness.scenario.model import KNOWN_PROFILES, Scenario, ScenarioError
from harness.scenario.results import ERROR, FAILED, PASSED, UNSUPPORTED, RunResult, ScenarioResult
from harness.scenario.shard import merge_runs, parse_shard

__all__ = ["format_trace", "main"]

EPILOG = """\
examples:
  bdf-harness run scenarios --report-dir reports
      run the whole suite with the reference driver, in parallel, and write reports
  bdf-harness run scenarios/hotplug/a4-defs-in-sync-after-transient-unplug.yaml --jobs 1
  bdf-harness run scenarios --profile v51 --target reference-process
  bdf-harness run scenarios --target libvirt --profile v53 --conformance conformance.md
      against stock libvirt (tools/build-libvirt.sh), writing the conformance summary
  bdf-harness run scenarios/hotplug --target chv --chv-binary ./cloud-hypervisor
      the reference driver on a real cloud-hypervisor (root, /dev/kvm; slow: guests boot)
  bdf-harness run scenarios --shard 2/4 --report-dir r2
      run the second of four parts (one per CI worker), then:
  bdf-harness merge r1 r2 r3 r4 --report-dir reports
  bdf-harness list scenarios
  bdf-harness replay scenarios/hotplug/a4-defs-in-sync-after-transient-unplug.yaml --trace
      run one scenario and print every step, CHV request/response and address change
  bdf-harness validate scenarios/**/*.yaml
      check files against the format (docs/scenario-format.md) without running them
  bdf-harness diff --report diff.json
      compare fakechv with the real cloud-hypervisor builds, exchange by exchange
"""

_STATUS_MARK = {PASSED: "PASS", FAILED: "FAIL", ERROR: "ERROR", UNSUPPORTED: "UNSUPPORTED"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    from harness.targets import TARGETS

    parser = _Parser(
        prog="bdf-harness",
        description=(
            "Run BDF stability scenarios (YAML, docs/scenario-format.md) against a "
            "libvirt-side driver and Cloud Hypervisor, and report whether PCI addresses "
            "stayed stable and in sync."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run scenarios and print a summary",
        description="Run scenario files (directories are searched for *.yaml).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("paths", nargs="*", default=["scenarios"], metavar="PATH")
    run.add_argument(
        "--target",
        default="reference",
        choices=sorted(TARGETS),
        help="where to run (default: reference, the in-process reference driver)",
    )
    run.add_argument(
        "--profile",
        choices=KNOWN_PROFILES,
        help="run every scenario under this CHV profile instead of its own list",
    )
    run.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=None,
        help="scenarios run in parallel (default: the number of CPUs)",
    )
    run.add_argument("--report-dir", type=Path, help="write HTML/JUnit/Markdown/JSON reports here")
    run.add_argument(
        "--conformance",
        type=Path,
        metavar="FILE",
        help="with --target libvirt: also write the conformance summary (Markdown, "
        "deterministic: docs/libvirt-11.3-conformance.md), with where libvirt puts the "
        "default domain's devices after define and start",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="only print the summary")
    run.add_argument(
        "--progress",
        action="store_true",
        help="show progress (runs done, failures, time) also when stderr is not a terminal "
        "(on a terminal it shows by itself once a run takes more than 2 s)",
    )
    run.add_argument(
        "--shard",
        metavar="I/N",
        help="run only the I-th of N deterministic parts of the planned runs (merge the "
        "N run.json files with 'bdf-harness merge')",
    )
    _documents_option(run)
    _quirks_option(run)
    _chv_options(run)

    lst = sub.add_parser(
        "list",
        help="list scenarios with their profiles and sources",
        description="List the scenario files under PATHs (default: scenarios): name, CHV "
        "profiles, required features and source. A file that does not load is listed "
        "INVALID with the reason (exit status 2).",
        epilog="examples:\n  bdf-harness list\n  bdf-harness list scenarios/migration",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lst.add_argument("paths", nargs="*", default=["scenarios"], metavar="PATH")
    _documents_option(lst)

    replay = sub.add_parser(
        "replay",
        help="run one scenario and print what happened",
        description="Run one scenario file under each of its profiles (or --profile) and "
        "print its outcome; --trace prints every step with FILE:LINE, the CHV requests and "
        "responses, the definition changes and the slot maps; --json the whole result.",
        epilog="examples:\n"
        "  bdf-harness replay scenarios/hotplug/b8-add-remove-add-net.yaml --trace\n"
        "  bdf-harness replay reports/repro-1.yaml --profile v51 --json > run.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("file", type=Path, metavar="FILE")
    replay.add_argument("--trace", action="store_true", help="print the full trace")
    replay.add_argument("--profile", choices=KNOWN_PROFILES)
    replay.add_argument("--target", default="reference", choices=sorted(TARGETS))
    replay.add_argument("--json", action="store_true", help="print the result as JSON")
    _documents_option(replay)
    _quirks_option(replay)
    _chv_options(replay)

    merge = sub.add_parser(
        "merge",
        help="merge the results of the shards of a run into one run",
        description="Merge the run.json files written by 'bdf-harness run --shard I/N "
        "--report-dir DIR' for every I into one run, print its summary and, with "
        "--report-dir, write its reports. A directory stands for its run.json.",
        epilog="example:\n  bdf-harness merge shard1 shard2 shard3 --report-dir reports",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    merge.add_argument("results", nargs="+", type=Path, metavar="RUN_JSON_OR_DIR")
    merge.add_argument("--report-dir", type=Path, help="write the merged run's reports here")

    validate = sub.add_parser(
        "validate",
        help="check scenario files (or directories of them) without running them",
        description="Check scenario files against the format (docs/scenario-format.md): "
        "keys, commands, addresses, fault endpoints of each profile, documents (XML, and "
        "libvirt's schema when virt-xml-validate is installed). Problems are printed as "
        "FILE:LINE: reason; exit status 2 if there is any.",
        epilog="examples:\n  bdf-harness validate scenarios\n"
        "  bdf-harness validate my-scenario.yaml other.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _documents_option(validate)

    from harness.differential.command import add_parser as add_diff_parser
    from harness.scenario.catch import add_parser as add_quirks_parser

    add_diff_parser(sub)
    add_quirks_parser(sub)
    return parser


def _chv_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("real Cloud Hypervisor (--target chv)")
    group.add_argument(
        "--chv-binary",
        metavar="PATH",
        help="the cloud-hypervisor binary (default: $CHV_BINARY, else "
        "../shared/chv/cloud-hypervisor-v53.0); the profile follows its --version",
    )
    group.add_argument(
        "--guest-kernel",
        metavar="PATH",
        help="the guest kernel it boots (default: $CHV_GUEST_KERNEL, else "
        "../shared/chv/guest-vmlinux)",
    )
    group.add_argument(
        "--guest-cmdline",
        metavar="TEXT",
        help="the guest's kernel command line (default: $CHV_GUEST_CMDLINE, else "
        "../shared/chv/guest-cmdline.txt)",
    )


def _apply_chv_options(args: argparse.Namespace) -> None:
    """The options go to the environment, where the target (also in workers) reads them."""
    from harness.chv.binary import BINARY_ENV, GUEST_CMDLINE_ENV, GUEST_KERNEL_ENV

    for value, env in (
        (args.chv_binary, BINARY_ENV),
        (args.guest_kernel, GUEST_KERNEL_ENV),
        (args.guest_cmdline, GUEST_CMDLINE_ENV),
    ):
        if value is not None:
            os.environ[env] = str(Path(value).resolve()) if env != GUEST_CMDLINE_ENV else value


def _quirks_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quirks",
        metavar="NAME,...",
        help="run the reference driver with these deliberate deviations (bdf-harness "
        "quirks --list; the preset cyberus-libvirt turns on all): a driver under test, "
        "not a scenario, has them",
    )


def _apply_quirks(args: argparse.Namespace) -> None:
    """Checked here, handed to the target (and its workers) in the environment."""
    from harness.driver.quirks import ENV, parse_quirks

    if args.quirks is None:
        return
    names = parse_quirks(args.quirks)  # QuirkError (a HarnessError) names a bad one
    if args.target not in ("reference", "reference-process"):
        raise HarnessError(
            f"--quirks changes the reference driver: it needs --target reference or "
            f"reference-process, not {args.target}"
        )
    os.environ[ENV] = ",".join(sorted(names))


def _documents_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-outside-documents",
        action="store_true",
        help="let scenarios read document files outside their own folder, the folders "
        "named here and the current directory (refused by default)",
    )


def _access(args: argparse.Namespace, paths: Sequence[Path | str]) -> DocumentAccess:
    return DocumentAccess.for_paths(paths, args.allow_outside_documents)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command in ("run", "replay"):
            _apply_chv_options(args)
            _apply_quirks(args)
        if args.command == "run":
            return _cmd_run(args, sys.stdout)
        if args.command == "list":
            return _cmd_list(args, sys.stdout)
        if args.command == "replay":
            return _cmd_replay(args, sys.stdout)
        if args.command == "merge":
            return _cmd_merge(args, sys.stdout)
        if args.command == "quirks":
            from harness.scenario.catch import run_command as run_quirks

            return run_quirks(args, sys.stdout)
        if args.command == "diff":
            from harness.differential.command import run_command

            return run_command(args, sys.stdout)
        return _cmd_validate(args, sys.stdout)
    except HarnessError as exc:
        print(f"bdf-harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bdf-harness: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `bdf-harness list | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _line(result: ScenarioResult) -> str:
    mark = _STATUS_MARK.get(result.status, result.status.upper())
    head = f"{mark:<11} {result.name} [{result.profile}] ({result.seconds:.2f}s)"
    if result.status != PASSED and result.failure:
        return f"{head}\n            {result.failure}"
    return head


def _cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from harness.scenario.batch import run_paths

    if args.jobs is not None and args.jobs < 1:
        raise HarnessError(f"--jobs must be at least 1, not {args.jobs}")
    if args.conformance is not None and args.target != "libvirt":
        raise HarnessError(
            f"--conformance summarises stock libvirt's CH driver: it needs --target libvirt, "
            f"not {args.target}"
        )
    shard = parse_shard(args.shard) if args.shard is not None else None
    bad = 0
    access = _access(args, args.paths)
    loaded: dict[str, Scenario] = {}
    for path in _scenario_files(args.paths):  # a missing path is bad input (exit 2)
        try:
            scenario = loaded[str(path)] = load_scenario(path, access)
            problems = _schema_problems(scenario)
        except ScenarioError as exc:
            problems = [str(exc)]
        for problem in problems:
            print(f"bdf-harness: error: {problem}", file=sys.stderr)
        bad += bool(problems)
    if bad:
        print(f"bdf-harness: {bad} scenario file(s) do not load; nothing was run", file=sys.stderr)
        return 2

    status = Progress(forced=args.progress)

    def progress(result: ScenarioResult) -> None:
        if not args.quiet or result.status not in (PASSED, UNSUPPORTED):
            status.clear()
            print(_line(result), file=out, flush=True)
            status.redraw()
        status.update(failed=result.status not in (PASSED, UNSUPPORTED))

    try:
        run = run_paths(
            args.paths,
            target=args.target,
            profile=args.profile,
            jobs=args.jobs or os.cpu_count() or 1,
            progress=progress,
            allow_outside_documents=args.allow_outside_documents,
            shard=shard,
            planned=status.plan,
            loaded=loaded,
        )
    finally:
        status.close()
    print(_summary(run), file=out)
    if args.report_dir is not None:
        from harness.reports.writer import write_reports

        written = write_reports(run, args.report_dir)
        for kind, path in sorted(written.items()):
            print(f"report ({kind}): {path}", file=out)
    if run.interrupted:
        return 130
    if args.conformance is not None:
        _write_conformance(run, args.conformance, args.profile or "v53", out)
    return 0 if run.ok and run.scenarios else 1


def _cmd_merge(args: argparse.Namespace, out: TextIO) -> int:
    runs = []
    for given in args.results:
        path = given / "run.json" if given.is_dir() else given
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            run = RunResult.from_json(data)
        except OSError as exc:
            raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise HarnessError(f"{path}: not the run.json of a run: {exc}") from None
        runs.append((str(path), run))
    merged = merge_runs(runs)
    print(_summary(merged), file=out)
    if args.report_dir is not None:
        from harness.reports.writer import write_reports

        for kind, path in sorted(write_reports(merged, args.report_dir).items()):
            print(f"report ({kind}): {path}", file=out)
    if merged.interrupted:
        return 130
    return 0 if merged.ok and merged.scenarios else 1


def _write_conformance(run: RunResult, path: Path, profile: str, out: TextIO) -> None:
    import asyncio

    from harness.reports.conformance import conformance_markdown
    from harness.targets.libvirt import LIBVIRT_VERSION, LibvirtTarget, start_path

    real = LibvirtTarget().chv
    text = conformance_markdown(
        run,
        libvirt_version=LIBVIRT_VERSION,
        start_path=asyncio.run(start_path(profile=real.profile if real else profile)),
        real_chv=real.banner if real is not None else None,
        chv_path=str(real.path) if real is not None else None,
    )
    try:
        path.write_text(text)
    except OSError as exc:
        raise HarnessError(f"cannot write the conformance summary to {path}: {exc}") from None
    print(f"conformance summary: {path}", file=out)


def _summary(run: RunResult) -> str:
    text = _verdict(run)
    return f"{text} (shard {run.shard})" if run.shard else text


def _verdict(run: RunResult) -> str:
    counts = run.counts()
    parts = [f"{counts[k]} {k}" for k in (PASSED, FAILED, ERROR, UNSUPPORTED) if counts.get(k)]
    total = len(run.scenarios)
    if run.interrupted:
        return (
            f"INTERRUPTED: {total} of {run.planned} scenario runs finished on target "
            f"{run.target}: {', '.join(parts) or 'none'} in {run.seconds:.2f}s"
        )
    verdict = "OK" if run.ok and total else "FAILED"
    return (
        f"{verdict}: {total} scenario runs on target {run.target}: "
        f"{', '.join(parts) or 'nothing ran'} in {run.seconds:.2f}s"
    )


def _cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    bad = 0
    access = _access(args, args.paths)
    for path in _scenario_files(args.paths):
        try:
            scenario = load_scenario(path, access)
        except ScenarioError as exc:
            print(f"INVALID  {exc}", file=out)
            bad += 1
            continue
        extra = f" requires {','.join(scenario.requires)}" if scenario.requires else ""
        print(
            f"{path}: {scenario.name} [{', '.join(scenario.profiles)}]{extra}"
            f"{' - ' + scenario.source if scenario.source else ''}",
            file=out,
        )
    return 2 if bad else 0


def _cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    from harness.scenario.schema import schema_available

    bad = 0
    access = _access(args, args.files)
    if not schema_available():
        print(
            "bdf-harness: note: documents not checked against libvirt's schema: "
            "virt-xml-validate (libvirt-clients) or xmllint (libxml2-utils) is missing",
            file=sys.stderr,
        )
    for path in _scenario_files(args.files):  # directories are searched for *.yaml
        try:
            scenario = load_scenario(path, access)
        except ScenarioError as exc:
            print(f"bdf-harness: error: {exc}", file=sys.stderr)
            bad += 1
            continue
        problems = _schema_problems(scenario)
        for problem in problems:
            print(f"bdf-harness: error: {problem}", file=sys.stderr)
        if problems:
            bad += 1
            continue
        print(f"{path}: ok ({scenario.name}, {len(scenario.steps)} steps)", file=out)
    return 2 if bad else 0


def _scenario_files(paths: Sequence[Path | str]) -> list[Path]:
    """The scenario files under ``paths``; HarnessError if there are none."""
    found = find_scenarios(paths)
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise HarnessError(f"no scenario files (*.yaml) in {where}")
    return found


def _schema_problems(scenario: Scenario) -> list[str]:
    """libvirt's schema over the scenario's documents, when its tools are installed."""
    from harness.scenario.schema import schema_available, schema_problems

    return schema_problems(scenario) if schema_available() else []


def _cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    import asyncio

    from harness.scenario.run import run_scenario
    from harness.targets import make_target

    scenario = load_scenario(args.file, _access(args, [args.file]))
    target = make_target(args.target)
    status = 0
    for profile in [args.profile] if args.profile else scenario.profiles:
        result = asyncio.run(run_scenario(scenario, profile, target))
        if args.json:
            print(json.dumps(RunResult([result], target.name).to_json(), indent=2), file=out)
        elif args.trace:
            print(format_trace(result), file=out)
        else:
            print(_line(result), file=out)
        if result.status not in (PASSED, UNSUPPORTED):
            status = 1
    return status


def _short(value: object, limit: int = 400) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_trace(result: ScenarioResult) -> str:
    """A scenario run as text: steps, CHV exchanges, definition changes, violations, maps.

    Each step header names the step's ``FILE:LINE``; the differences between the
    sides name what each side has there, as the reports do.
    """
    from harness.reports.wording import difference_notes, step_location

    lines = [
        f"scenario: {result.name}",
        f"file: {result.file}",
        f"source: {result.source}",
        f"profile: {result.profile}  target: {result.target}",
        f"status: {result.status}" + (f" - {result.failure}" if result.failure else ""),
        "",
    ]
    for step in result.steps:
        where = step_location(result.file, step)
        at = f" ({where})" if where else ""
        lines.append(f"step {step.index}{at} [{step.host}] {step.text}: {step.status}")
        if step.error:
            lines.append(f"  error: {step.error}")
        for ex in step.exchanges:
            who = f"{ex.get('host', '')} {ex.get('domain', '')}".strip()
            req = "" if ex.get("request") is None else " " + _short(ex["request"])
            lines.append(f"  CHV {who}: {ex['method']} /api/v1/{ex['endpoint']}{req}")
            resp = "" if ex.get("response") is None else " " + _short(ex["response"])
            lines.append(f"      -> {ex['status']}{resp}")
        for change in step.changes:
            lines.append(f"  change: {change}")
        for v in step.violations:
            lines.append(f"  violation: {v.get('message', v)}")
        if step.maps and step.status != "skipped":
            for side in ("live", "persistent", "chv"):
                for dom, slots in sorted(step.maps.get(side, {}).items()):
                    cells = ", ".join(
                        f"{bdf.removeprefix('0000:')} {entry.device}"
                        for bdf, entry in sorted(slots.items())
                    )
                    lines.append(f"  {side:<10} {dom}: {cells or '(none)'}")
            if step.differences:
                lines.append(f"  differences: {', '.join(difference_notes(step))}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
