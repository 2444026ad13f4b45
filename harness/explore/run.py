"""Running the state machine: hypothesis settings profiles (:func:`register_profiles`),
a machine class per CHV profile (:func:`machine_class`), one run with its shrunk
reproducer (:func:`run_machine`, :class:`MachineRun`) and the end of a run
(:func:`close_loop`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from harness.collector import fewer_collections
from harness.driver.daemon import Driver
from harness.driver.launcher import InProcessLauncher
from harness.errors import HarnessError
from harness.explore.machine import BdfMachine
from harness.explore.trace import Trace
from harness.explore.vocabulary import KNOWN_DESYNCS, OTHER_DEVICES

__all__ = ["MachineRun", "close_loop", "machine_class", "register_profiles", "run_machine"]


def register_profiles() -> None:
    """Hypothesis settings profiles: ``ci`` (derandomized), ``dev`` (default), ``soak``."""
    common: dict[str, Any] = {
        "deadline": None,
        # no "explain" phase: it replays the shrunk example many more times
        "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
    }
    settings.register_profile(
        "ci", max_examples=60, stateful_step_count=30, derandomize=True, database=None, **common
    )
    settings.register_profile("dev", max_examples=60, stateful_step_count=30, **common)
    settings.register_profile(
        "soak", max_examples=50, stateful_step_count=50, database=None, **common
    )


def machine_class(
    profile: str = "v53",
    *,
    eject: str = "immediate",
    other_devices: dict[str, str] | None = None,
    known_desyncs: bool = True,
    avoid: frozenset[str] | set[str] | None = None,
    migration: bool = False,
    quirks: frozenset[str] = frozenset(),
) -> type[BdfMachine]:
    """A :class:`BdfMachine` subclass for one CHV profile (``v51`` ... ``head``).

    ``eject="never"``: the simulated guest never ejects (live detaches time out).
    ``other_devices``: the documents of the other-classes rule (default
    :data:`OTHER_DEVICES`). ``avoid``: names of :data:`KNOWN_DESYNCS` to steer around;
    without it, ``known_desyncs=False`` avoids all of them and True (default) none.
    ``migration``: two daemons (``src``, ``dst``) with migrate and host-switch rules.
    ``quirks``: run the driver with these deviations (:mod:`harness.driver.quirks`).
    """
    try:
        InProcessLauncher(profile)  # fail early on an unknown profile
    except ValueError as exc:
        raise HarnessError(str(exc)) from None
    unknown = set(avoid or ()) - set(KNOWN_DESYNCS)
    if unknown:
        raise HarnessError(f"unknown desync(s) {sorted(unknown)} (known: {sorted(KNOWN_DESYNCS)})")
    if migration and not hasattr(Driver, "migrate"):
        raise HarnessError("this reference driver does not migrate yet")
    if eject not in ("immediate", "never"):
        raise HarnessError(f"eject must be 'immediate' or 'never', not {eject!r}")
    attrs: dict[str, Any] = {
        "profile": profile,
        "eject": eject,
        "avoid": frozenset(avoid if avoid is not None else () if known_desyncs else KNOWN_DESYNCS),
        "host_names": ("src", "dst") if migration else ("host",),
        "other_devices": OTHER_DEVICES if other_devices is None else other_devices,
        "last_failure": None,
        "quirks": frozenset(quirks),
    }
    name = f"BdfMachine_{profile.replace('-', '_')}_{eject}" + ("_migration" if migration else "")
    if quirks:
        name += "_quirks"
    return type(name, (BdfMachine,), attrs)


@dataclass
class MachineRun:
    """What one :func:`run_machine` call did."""

    profile: str
    steps: int
    seconds: float
    failure: Trace | None = None
    error: BaseException | None = None
    reproducer: Path | None = None
    #: the part of ``seconds`` spent in the driver, fakechv and the checks (the rest
    #: is hypothesis: drawing, choosing rules, shrinking)
    system_seconds: float = 0.0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


def run_machine(
    machine: type[BdfMachine],
    *,
    settings_: settings | None = None,
    report_dir: Path | None = None,
) -> MachineRun:
    """Run ``machine`` under ``settings_``; on failure write the shrunk reproducer.

    Hypothesis replays the minimal failing example last, so the machine's last recorded
    failure is the shrunk one. Returns a :class:`MachineRun` (never raises for a failure
    the machine found).
    """
    from harness.explore.reproducer import write_reproducer

    machine.last_failure = None
    if BdfMachine.loop is None or BdfMachine.loop.is_closed():
        BdfMachine.loop = TimedLoop()
    loop = BdfMachine.loop
    start_system = loop.seconds if isinstance(loop, TimedLoop) else 0.0
    start_steps = BdfMachine.steps_run
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        with fewer_collections():
            run_state_machine_as_test(machine, settings=settings_)
    except Exception as exc:
        error = exc
    seconds = time.perf_counter() - started
    result = MachineRun(machine.profile, BdfMachine.steps_run - start_steps, seconds)
    if isinstance(loop, TimedLoop):
        result.system_seconds = loop.seconds - start_system
    if error is not None:
        result.error = error
        result.failure = machine.last_failure or Trace(
            machine.profile, failure=f"{type(error).__name__}: {error}", rules=["error"]
        )
        if report_dir is not None and result.failure.steps:
            result.reproducer = write_reproducer(result.failure, Path(report_dir))
    return result


class TimedLoop(asyncio.SelectorEventLoop):
    """The machine's event loop, adding up the seconds it runs: every step's work in the
    driver, fakechv and the checks runs in it, hypothesis's own work outside."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0

    def run_until_complete(self, future: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().run_until_complete(future)
        finally:
            self.seconds += time.perf_counter() - started


def close_loop() -> None:
    """Close the shared event loop (end of a run)."""
    loop, BdfMachine.loop = BdfMachine.loop, None
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
