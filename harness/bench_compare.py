"""Before and after, side by side: the speed benchmarks of an earlier commit and of this
tree, run in one session, interleaved, with the ratio of each.

``python -m harness.bench_compare --base REV`` checks ``REV`` out into a temporary
``git worktree``, compiles the bytecode of both trees, then runs each benchmark in a
child process whose ``cwd`` and ``PYTHONPATH`` are the tree under test (so it imports
that tree's code, not the installed one): base, this tree, base, this tree, ... for
``--rounds`` rounds. It keeps the best figure of each side (the least disturbed by the
machine's other load) and prints a Markdown table with the load average before and
after. Figures are printed, never asserted.

The benchmarks (``--only`` picks some):

* ``startup``: ``python -m fakechv.bench_startup``, exec to first ``vmm.ping`` (median);
* ``suite``: the scenario suite on the in-process target, 2 jobs (``harness.scenario.bench``);
* ``suite-1``: the same with 1 job;
* ``main-job``: ``tox -e scenarios``'s command, exec to exit: ``bdf-harness run scenarios``
  with 2 jobs, writing every report;
* ``process``: the suite on ``--target reference-process``, 2 jobs;
* ``machine``: the property state machine, derandomized (the same steps on both sides),
  steps per CPU second after a short warm-up run (a soak runs warm).
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fakechv.loadavg import load_average

__all__ = ["BENCHMARKS", "Benchmark", "main"]

ROOT = Path(__file__).resolve().parents[1]

#: run inside the tree under test: the machine's rate over a fixed, derandomized run
_MACHINE = """
import time
from hypothesis import HealthCheck, Phase, settings
from harness.explore.run import close_loop, machine_class, run_machine
from harness.explore.vocabulary import OPEN_DESYNCS
machine = machine_class("v53", avoid=OPEN_DESYNCS)
config = settings(max_examples=40, stateful_step_count=50, derandomize=True, database=None,
                  deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
run_machine(machine, settings_=settings(config, max_examples=5))  # warm: caches, specs
started = time.process_time()
run = run_machine(machine, settings_=config)
cpu = time.process_time() - started
close_loop()
assert run.failure is None, run.failure
print(f"machine: {run.steps} steps {run.steps / cpu:.1f} steps/s")
"""


#: run inside the tree under test: the main job's command, exec to exit, reports written
_MAIN_JOB = """
import subprocess, sys, tempfile, time
from pathlib import Path
with tempfile.TemporaryDirectory() as reports:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "scenarios", "--jobs", "2",
                           "--quiet", "--report-dir", reports], stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    assert done.returncode == 0 and (Path(reports) / "index.html").is_file(), done.returncode
print(f"main job: {wall:.2f} s")
"""


@dataclass(frozen=True)
class Benchmark:
    name: str
    what: str
    #: the child's command line (after the interpreter)
    argv: tuple[str, ...]
    #: reads the figure from the child's output
    pattern: str
    unit: str
    #: True if a larger figure is better (a rate), False for a time
    higher_is_better: bool

    def figure(self, output: str) -> float:
        match = re.search(self.pattern, output)
        if match is None:
            raise ValueError(f"{self.name}: no figure in its output:\n{output[-2000:]}")
        return float(match.group(1))


_SUITE = ("-m", "harness.scenario.bench", "--repeat", "1")
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "startup",
            "fakechv start-up, exec to first `vmm.ping` (median)",
            ("-m", "fakechv.bench_startup"),
            r"python -m fakechv: median (\d+(?:\.\d+)?) ms",
            "ms",
            False,
        ),
        Benchmark(
            "suite",
            "in-process scenario suite, 2 jobs",
            (*_SUITE, "--jobs", "2"),
            r"best: (\d+\.\d+) s",
            "s",
            False,
        ),
        Benchmark(
            "suite-1",
            "in-process scenario suite, 1 job",
            (*_SUITE, "--jobs", "1"),
            r"best: (\d+\.\d+) s",
            "s",
            False,
        ),
        Benchmark(
            "main-job",
            "`bdf-harness run scenarios` with its reports, 2 jobs, exec to exit",
            ("-c", _MAIN_JOB),
            r"main job: (\d+\.\d+) s",
            "s",
            False,
        ),
        Benchmark(
            "process",
            "`--target reference-process` suite, 2 jobs",
            (*_SUITE, "--jobs", "2", "--target", "reference-process"),
            r"best: (\d+\.\d+) s",
            "s",
            False,
        ),
        Benchmark(
            "machine",
            "property state machine, derandomized (steps per CPU second)",
            ("-c", _MACHINE),
            r"machine: \d+ steps (\d+(?:\.\d+)?) steps/s",
            "steps/s",
            True,
        ),
    )
}


def _env(tree: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("CHV_REFERENCE_DIR", str(ROOT.parent / "shared" / "reference"))
    return env


def check_imports(tree: Path) -> None:
    """Refuse to measure a tree whose children would import another tree's code."""
    code = "import fakechv, harness; print(fakechv.__file__); print(harness.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=_env(tree), capture_output=True, text=True
    )
    found = [Path(line).resolve() for line in done.stdout.split()]
    if done.returncode != 0 or any(tree.resolve() not in p.parents for p in found):
        raise RuntimeError(f"a child in {tree} imports {found or done.stderr.strip()}")


def run_in(tree: Path, bench: Benchmark, *, timeout: float = 900) -> float:
    """One run of ``bench`` with ``tree``'s code; its figure."""
    done = subprocess.run(
        [sys.executable, *bench.argv],
        cwd=tree,
        env=_env(tree),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{bench.name} in {tree} exited {done.returncode}:\n{output[-2000:]}")
    return bench.figure(output)


def compare(
    base: Path,
    head: Path,
    benches: Sequence[Benchmark],
    rounds: int,
    *,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[tuple[Benchmark, float, float]]:
    """(benchmark, best before, best after) for each benchmark, runs interleaved."""
    out = []
    for bench in benches:
        before: list[float] = []
        after: list[float] = []
        for index in range(rounds):
            before.append(run_in(base, bench))
            after.append(run_in(head, bench))
            progress(
                f"  {bench.name} round {index + 1}/{rounds}: "
                f"{before[-1]:g} -> {after[-1]:g} {bench.unit}"
            )
        pick = max if bench.higher_is_better else min
        out.append((bench, pick(before), pick(after)))
    return out


def ratio(bench: Benchmark, before: float, after: float) -> float:
    """How many times better ``after`` is (above 1: faster)."""
    if bench.higher_is_better:
        return after / before if before else float("inf")
    return before / after if after else float("inf")


def table(rows: list[tuple[Benchmark, float, float]], base: str, head: str) -> str:
    lines = [
        f"| what | before (`{base}`) | after (`{head}`) | ratio |",
        "|---|---|---|---|",
    ]
    for bench, before, after in rows:
        lines.append(
            f"| {bench.what} | {before:g} {bench.unit} | {after:g} {bench.unit} | "
            f"x{ratio(bench, before, after):.2f} |"
        )
    return "\n".join(lines)


def _git(*args: str, check: bool = True) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=check
    ).stdout.strip()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.bench_compare",
        description="Run the speed benchmarks of an earlier commit and of this tree side by "
        "side, interleaved, and print before, after and their ratio as a Markdown table.",
    )
    p.add_argument("--base", required=True, help="the commit to compare with (any git revision)")
    p.add_argument(
        "--rounds", type=int, default=3, help="runs of each side per benchmark (default 3)"
    )
    p.add_argument(
        "--only",
        metavar="NAME,...",
        help=f"run only these benchmarks ({', '.join(BENCHMARKS)}; default all)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or args.rounds < 1:
        problem = f"unknown benchmark(s) {', '.join(unknown)}" if unknown else "--rounds < 1"
        print(f"bench_compare: {problem} (known: {', '.join(BENCHMARKS)})", file=sys.stderr)
        return 2
    try:
        base_rev = _git("rev-parse", "--short", f"{args.base}^{{commit}}")
        head_rev = _git("rev-parse", "--short", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        print(f"bench_compare: cannot resolve {args.base!r}: {detail.strip()}", file=sys.stderr)
        return 2
    if _git("status", "--porcelain", "--untracked-files=no"):
        head_rev += "+changes"
    scratch = Path(tempfile.mkdtemp(prefix="bdf-bench-compare-"))
    base = scratch / "base"
    try:
        _git("worktree", "add", "--detach", str(base), base_rev)
        for tree in (base, ROOT):
            for package in ("fakechv", "harness"):
                compileall.compile_dir(tree / package, quiet=1)
            check_imports(tree)
        print(f"before: {base_rev}, after: {head_rev}, {args.rounds} round(s), interleaved")
        print(f"load average before: {load_average()}", flush=True)

        def say(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        rows = compare(base, ROOT, [BENCHMARKS[n] for n in names], args.rounds, progress=say)
        print(f"load average after: {load_average()}")
        print()
        print(table(rows, base_rev, head_rev))
    except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        print(f"bench_compare: {exc}", file=sys.stderr)
        return 1
    finally:
        _git("worktree", "remove", "--force", str(base), check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
