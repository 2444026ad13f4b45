"""Batches of scenario runs: every file under some paths, under each of its profiles.

:func:`run_paths` plans the (file, profile) runs, runs them in worker processes
(:mod:`harness.scenario.workers`) or in this process, and returns one
:class:`~harness.scenario.results.RunResult` in a stable order. Ctrl-C, SIGTERM or
SIGHUP stop it cleanly (:mod:`harness.lifetime`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from harness.collector import fewer_collections
from harness.errors import HarnessError
from harness.lifetime import adopt_orphans, check_interrupt, end_descendants, interrupts_raise
from harness.scenario.files import DocumentAccess
from harness.scenario.load import find_scenarios, load_scenario
from harness.scenario.model import Scenario, ScenarioError
from harness.scenario.results import (
    ERROR,
    SKIPPED,
    UNSUPPORTED,
    RunResult,
    ScenarioResult,
    StepResult,
)
from harness.scenario.run import default_workdir, run_scenario
from harness.scenario.shard import Shard
from harness.scenario.workers import WorkerPool
from harness.targets import make_target
from harness.targets.base import Target

__all__ = ["load_error", "plan", "run_paths", "run_scenario_sync"]


def run_scenario_sync(
    path: Path | str,
    profile: str | None = None,
    target: str = "reference",
    access: DocumentAccess | None = None,
) -> list[ScenarioResult]:
    """Load and run one file under each of its profiles (or ``profile``); for tests/workers."""
    try:
        scenario = load_scenario(path, access)
    except ScenarioError as exc:
        return [load_error(Path(path), str(exc), target)]
    profiles = [profile] if profile else scenario.profiles
    tgt = make_target(target)
    return [asyncio.run(run_scenario(scenario, p, tgt)) for p in profiles]


#: the scenarios the plan of the current run loaded, by path: the run (and the workers
#: it forks, which inherit this) does not read and validate each file again
_PLANNED: dict[str, Scenario] = {}


def _run_one(
    path: str,
    profile: str,
    target: str,
    access: DocumentAccess | None = None,
    workdir: str | None = None,
) -> ScenarioResult:
    try:
        scenario = _PLANNED.get(path) or load_scenario(path, access)
    except ScenarioError as exc:
        return load_error(Path(path), str(exc), target)
    try:
        base = Path(workdir) if workdir else None
        return asyncio.run(run_scenario(scenario, profile, make_target(target), workdir=base))
    except Exception as exc:  # pragma: no cover - last resort: report, never crash the pool
        return ScenarioResult(
            scenario.name,
            str(path),
            scenario.source,
            profile,
            target,
            status=ERROR,
            failure=f"{type(exc).__name__}: {exc}",
        )


def load_error(path: Path, message: str, target: str) -> ScenarioResult:
    return ScenarioResult(path.stem, str(path), "", "-", target, status=ERROR, failure=message)


def plan(
    paths: Iterable[Path | str],
    profile: str | None = None,
    access: DocumentAccess | None = None,
    target: Target | None = None,
    loaded: dict[str, Scenario] | None = None,
) -> list[tuple[str, str] | ScenarioResult]:
    """(file, profile) pairs to run, or an ERROR result for each file that does not load.

    A ``target`` that runs only some profiles (a real CHV binary runs its own release)
    gets each scenario under those of its profiles it lists, and an UNSUPPORTED result
    for a scenario that lists none of them. ``loaded`` is given each loaded scenario,
    by path; a scenario it holds already is taken as it is (loaded with the same access).
    """
    allowed = target.profiles if target is not None else None
    if profile and allowed is not None and profile not in allowed:
        assert target is not None
        raise HarnessError(
            f"--profile {profile}: target {target.name} runs {', '.join(allowed)} only "
            f"({target.describe(allowed[0])})"
        )
    out: list[tuple[str, str] | ScenarioResult] = []
    for path in find_scenarios(paths):
        scenario = loaded.get(str(path)) if loaded is not None else None
        if scenario is None:
            try:
                scenario = load_scenario(path, access)
            except ScenarioError as exc:
                out.append(load_error(path, str(exc), ""))
                continue
        if loaded is not None:
            loaded[str(path)] = scenario
        wanted = [profile] if profile else scenario.profiles
        runnable = [p for p in wanted if allowed is None or p in allowed]
        if not runnable and target is not None and allowed is not None:
            out.append(_not_for_target(scenario, target, allowed))
        for p in runnable:
            out.append((str(path), p))
    return out


def _not_for_target(scenario: Scenario, target: Target, allowed: tuple[str, ...]) -> ScenarioResult:
    return ScenarioResult(
        scenario.name,
        str(scenario.path),
        scenario.source,
        "/".join(scenario.profiles),
        target.name,
        status=UNSUPPORTED,
        failure=(
            f"written for {', '.join(scenario.profiles)}; target {target.name} runs "
            f"{', '.join(allowed)} ({target.describe(allowed[0])})"
        ),
        steps=[StepResult(s.index, s.text, s.host, status=SKIPPED) for s in scenario.steps],
    )


_WARM_UP_DOMAIN = """<domain type='kvm'><name>warm-up</name><memory unit='KiB'>262144</memory>
<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type><kernel>/k</kernel></os><devices>
<disk type='file' device='disk'><source file='/a.img'/><target dev='vda' bus='virtio'/></disk>
<interface type='ethernet'><mac address='52:54:00:00:00:01'/><model type='virtio'/></interface>
</devices></domain>"""


def _warm_up(profiles: Iterable[str]) -> None:
    """Exercise the target once per profile before the pool forks its workers.

    Workers inherit loaded modules, parsed release specs and built schema validators, so
    none of them pays for these again.
    """
    from harness.chv import spec
    from harness.targets.reference import ReferenceTarget

    async def exercise(profile: str) -> None:
        with tempfile.TemporaryDirectory(dir=default_workdir()) as tmp:
            host = await ReferenceTarget().open_host("warm-up", Path(tmp), profile)
            try:
                await host.define(_WARM_UP_DOMAIN, source="warm-up")
                await host.start("warm-up")
                disk = "<disk type='file'><source file='/b.img'/><target dev='vdb'/></disk>"
                flags = {"live": True, "config": True, "current": False, "persistent": False}
                await host.attach_device("warm-up", disk, flags, source="warm-up")
                await host.detach_device("warm-up", disk, flags, source="warm-up")
                await host.violations("warm-up")
                await host.destroy("warm-up")
            finally:
                await host.close()

    for profile in sorted(profiles):
        try:
            spec.load_spec(profile)
            asyncio.run(exercise(profile))
        except Exception:  # the workers will report any real problem properly
            pass


def _run_pool(
    tasks: list[tuple[int, tuple[str, str]]],
    jobs: int,
    target: str,
    access: DocumentAccess,
    session: Path,
    results: dict[int, ScenarioResult],
    progress: Callable[[ScenarioResult], None] | None,
) -> None:
    """Run ``tasks`` in worker processes; an interrupt stops them (SIGTERM, then
    SIGKILL after a deadline) and the hypervisors they started before it goes on."""
    _warm_up({prof for _i, (_path, prof) in tasks})
    adopt_orphans()  # a killed worker's hypervisors come back to us, not to init
    pool = WorkerPool(_run_one, jobs)
    work = [(index, (path, prof, target, access, str(session))) for index, (path, prof) in tasks]
    try:
        for index, outcome in pool.run(work):
            if isinstance(outcome, ScenarioResult):
                results[index] = outcome
            else:  # the worker died or failed outside the scenario
                path, prof = dict(tasks)[index]
                results[index] = ScenarioResult(
                    Path(path).stem, path, "", prof, target, status=ERROR, failure=str(outcome)
                )
            if progress:
                progress(results[index])
    except BaseException:
        end_descendants()
        raise


def run_paths(
    paths: Iterable[Path | str],
    *,
    target: str = "reference",
    profile: str | None = None,
    jobs: int | None = None,
    progress: Callable[[ScenarioResult], None] | None = None,
    allow_outside_documents: bool = False,
    shard: Shard | None = None,
    planned: Callable[[int], None] | None = None,
    loaded: Mapping[str, Scenario] | None = None,
) -> RunResult:
    """Run every scenario under ``paths``; ``jobs`` > 1 runs them in a process pool.

    ``shard``: run only that part of the plan (:mod:`harness.scenario.shard`);
    ``planned`` is told how many runs the plan has before the first starts.
    ``loaded``: scenarios the caller has loaded from these paths already, by path.

    A scenario reads documents from its own folder, the current directory and the
    folders in ``paths`` only, unless ``allow_outside_documents``.

    Results come back in a stable order (file, then the scenario's profile order).
    ScenarioError if a path does not exist; unknown target: HarnessError.

    Ctrl-C, SIGTERM or SIGHUP stop the run: the workers and the hypervisors they
    started are ended, the run's temporary directory is removed, and the result
    holds the runs that finished, with ``interrupted`` set.
    """
    chosen = make_target(target)  # fail early on an unknown or unusable target
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    paths = list(paths)
    access = DocumentAccess.for_paths(paths, allow_outside_documents)
    known: dict[str, Scenario] = dict(loaded or {})
    items = plan(paths, profile, access, chosen, known)
    if shard is not None:
        items = shard.select(items)
    if planned is not None:
        planned(len(items))
    jobs = jobs or os.cpu_count() or 1
    results: dict[int, ScenarioResult] = {}
    tasks = []
    for index, item in enumerate(items):
        if isinstance(item, ScenarioResult):
            item.target = target
            results[index] = item
            if progress:
                progress(item)
        else:
            tasks.append((index, item))
    interrupted = False
    session = Path(tempfile.mkdtemp(prefix="bdf-run-", dir=default_workdir()))
    _PLANNED.update(known)
    try:
        with interrupts_raise(), fewer_collections():
            if jobs <= 1 or len(tasks) <= 1:
                for index, (path, prof) in tasks:
                    check_interrupt()
                    results[index] = _run_one(path, prof, target, access, str(session))
                    if progress:
                        progress(results[index])
            else:
                _run_pool(tasks, jobs, target, access, session, results, progress)
    except KeyboardInterrupt:
        interrupted = True  # the runs that finished are reported as they finished
    finally:
        _PLANNED.clear()
        shutil.rmtree(session, ignore_errors=True)
    run = RunResult(
        scenarios=[results[i] for i in sorted(results)],
        target=target,
        started=started,
        seconds=time.perf_counter() - t0,
        interrupted=interrupted,
        planned=len(items),
        shard=str(shard) if shard is not None else "",
    )
    ran = {item[1] for item in items if isinstance(item, tuple)}
    run.hypervisors = {p: chosen.describe(p) for p in sorted(ran)}
    return run
