"""Run one scenario under one CHV profile against a target, and record what happened.

:func:`run_scenario` opens one host per scenario host, each in its own temporary
directory, then runs the steps in order. After every step it checks, on every domain of
every host:

* the invariants of :mod:`harness.checks.invariants` (unless the step declares the
  violation);
* after a failed operation: nothing changed (both definitions' XML and CHV's
  ``vm.info`` are identical before and after, :mod:`harness.checks.snapshot`);
* after save/restore, managedsave + start, daemon-restart, reboot and migrate: no
  device address moved (live definition and CHV);
* the step's own expectations (:mod:`harness.checks.expectations`).

Everything is recorded in :mod:`harness.scenario.results` records: each step with its
CHV API exchanges, definition changes and the slot maps of the three sides. A failure
names the device, the BDF and the side.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.checks.expectations import CheckFailed, expectation_problems, pick_domain
from harness.checks.invariants import Violation, check_unchanged
from harness.checks.snapshot import (
    Addresses,
    Maps,
    Snapshot,
    changed_after_failure,
    chv_by_label,
    definition_changes,
    device_addresses,
    domain_maps,
    side_addresses,
    side_present,
    snapshot_of,
)
from harness.checks.view import DomainView
from harness.model.domain import Domain
from harness.model.virsh import Command, VirshError
from harness.scenario.interpret import Context, execute
from harness.scenario.model import SIDES, Expectation, Scenario, Step
from harness.scenario.results import (
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    UNSUPPORTED,
    ScenarioResult,
    StepResult,
)
from harness.targets.base import Host, OperationFailed, Target, UnsupportedOperation

__all__ = ["default_workdir", "run_scenario"]


class _StepFailure(Exception):
    def __init__(self, message: str, violations: list[Violation] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations or []


@dataclass
class _Run:
    scenario: Scenario
    profile: str
    target: Target
    hosts: dict[str, Host] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Maps]] = field(default_factory=dict)
    #: violations accepted by a step's ``violations:`` (rule, device, side), carried on
    accepted: set[tuple[str, str, str]] = field(default_factory=set)
    #: live addresses at ``save``/``managedsave`` time: (host, domain or path) -> addresses
    saved: dict[tuple[str, str], tuple[str, dict[str, tuple[str, str | None]]]] = field(
        default_factory=dict
    )
    multi: bool = False
    workdir: str = ""  # the scenario's temporary directory, shown as $WORKDIR in traces
    refusal: str | None = None  # the error of the last command that failed as expected
    views: dict[tuple[str, str], DomainView] = field(default_factory=dict)
    snaps: dict[str, Snapshot] = field(default_factory=dict)

    def key(self, host: str, domain: str) -> str:
        return f"{host}/{domain}" if self.multi else domain

    def context(self) -> Context:
        """What the step interpreter works on in this run."""

        def definitions(host: str, domain: str) -> tuple[Domain | None, Domain | None] | None:
            view = self.views.get((host, domain))
            if view is None or view.state is None:
                return None
            return view.live, view.persistent

        from harness.chv.capabilities import CAPABILITIES

        caps = CAPABILITIES.get(self.profile)
        return Context(
            self.hosts,
            self.scenario.document,
            definitions,
            self.scenario.segments,
            caps.host_bridge_all_segments if caps is not None else True,
        )


async def run_scenario(
    scenario: Scenario, profile: str, target: Target, *, workdir: Path | None = None
) -> ScenarioResult:
    """Run one scenario under one profile; never raises for a scenario's own problems."""
    result = ScenarioResult(
        name=scenario.name,
        file=str(scenario.path),
        source=scenario.source,
        profile=profile,
        target=target.name,
    )
    started = time.perf_counter()
    missing = [f for f in scenario.requires if f not in target.features]
    if missing:
        result.status = UNSUPPORTED
        reasons = getattr(target, "why_not", {})
        result.failure = (
            "; ".join(f"requires {f}: {reasons[f]}" for f in missing if f in reasons)
            or f"requires {', '.join(missing)}, which target {target.name} does not support yet"
        )
        result.steps = [
            StepResult(s.index, s.text, s.host, status=SKIPPED, line=s.line) for s in scenario.steps
        ]
        return result
    run = _Run(scenario, profile, target, multi=len(scenario.hosts) > 1)
    base = workdir or default_workdir()
    with tempfile.TemporaryDirectory(prefix="bdf-scenario-", dir=base) as tmp:
        run.workdir = str(Path(tmp).resolve())
        try:
            for host in scenario.hosts:
                hostdir = Path(tmp) / host
                hostdir.mkdir()
                run.hosts[host] = await target.open_host(
                    host, hostdir, profile, segments=scenario.segments, eject=scenario.eject
                )
        except UnsupportedOperation as exc:  # e.g. a fake guest's eject on a real CHV
            result.status = UNSUPPORTED
            result.failure = f"target {target.name}: {exc}"
            result.steps = [
                StepResult(s.index, s.text, s.host, status=SKIPPED, line=s.line)
                for s in scenario.steps
            ]
            await _close(run)
            return result
        except Exception as exc:
            result.status = ERROR
            result.failure = f"cannot open host on target {target.name}: {exc}"
            await _close(run)
            return result
        try:
            await _observe(run)
            for step in scenario.steps:
                if result.status != PASSED:
                    result.steps.append(
                        StepResult(step.index, step.text, step.host, status=SKIPPED, line=step.line)
                    )
                    continue
                sr = await _run_step(run, step)
                result.steps.append(sr)
                if sr.status != PASSED:
                    result.status = sr.status
                    where = f"{scenario.path}:{step.line}"
                    result.failure = f"step {step.index} ({where}) `{step.text}`: {sr.error}"
        finally:
            await _close(run)
    result.seconds = time.perf_counter() - started
    return result


def default_workdir() -> Path | None:
    """A RAM-backed directory when there is one: the driver fsyncs every state change."""
    env = os.environ.get("BDF_HARNESS_WORKDIR")
    if env:
        return Path(env)
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return None


async def _close(run: _Run) -> None:
    for host in run.hosts.values():
        try:
            await host.close()
        except Exception:  # pragma: no cover - cleanup must not hide the result
            pass


async def _observe(run: _Run) -> None:
    """Read every host's domains once; steps and checks use ``run.views``/``run.snaps``."""
    run.views = {}
    run.snaps = {}
    for hname, host in run.hosts.items():
        views = {dom: await host.view(dom) for dom in host.domains()}
        run.snaps[hname] = snapshot_of(views)
        for dom, view in views.items():
            run.views[(hname, dom)] = view


async def _host_snap(host: Host) -> Snapshot:
    """A full snapshot (XML texts and vm.info too), for the checks of a failing step."""
    return snapshot_of({dom: await host.view(dom) for dom in host.domains()}, full=True)


async def _run_step(run: _Run, step: Step) -> StepResult:
    sr = StepResult(step.index, step.text, step.host, line=step.line)
    started = time.perf_counter()
    extra: list[Violation] = []
    host = run.hosts[step.host]
    before = dict(run.snaps)
    if step.kind == "fail":  # a failure must change nothing on any host (e.g. migration)
        for name, h in run.hosts.items():
            before[name] = await _host_snap(h)
    for h in run.hosts.values():
        h.take_exchanges()
    try:
        if step.kind in ("run", "fail"):
            assert step.command is not None
            extra = await _command_step(run, step, host, before)
        elif step.kind == "fault":
            assert step.fault is not None
            domain = step.fault.get("domain")
            await host.inject_fault(domain, step.fault)
        elif step.kind == "snapshot":
            assert step.snapshot is not None
            run.snapshots[step.snapshot] = {
                run.key(h, d): domain_maps(v) for (h, d), v in run.views.items()
            }
        if step.kind != "snapshot":
            for v in await _check_invariants(run, step, extra):
                sr.violations.append({**v.as_dict(), "expected": True})
        if step.kind == "expect":
            assert step.expect is not None
            _check_expectation(run, step, step.expect)
        sr.status = PASSED
    except _StepFailure as exc:
        sr.status = FAILED
        sr.error = exc.message
        sr.violations.extend(v.as_dict() for v in exc.violations)
    except UnsupportedOperation as exc:
        sr.status = UNSUPPORTED
        sr.error = str(exc)
    except Exception as exc:
        sr.status = ERROR
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        sr.error = f"{type(exc).__name__}: {exc}{where}"
    try:
        await _observe(run)
    except Exception as exc:  # pragma: no cover - the target died
        if sr.status == PASSED:
            sr.status, sr.error = ERROR, f"cannot read the host state: {exc}"
        run.views, run.snaps = {}, {}
    views, after = run.views, run.snaps
    if run.refusal is not None:
        sr.changes.append(f"refused as expected: {run.refusal}")
        run.refusal = None
    for name in run.hosts:
        if name in after:
            for line in definition_changes(before[name], after[name]):
                sr.changes.append(f"{name}: {line}" if run.multi else line)
        for ex in run.hosts[name].take_exchanges():
            if run.workdir:  # traces do not depend on where the run happened
                text = json.dumps(ex).replace(run.workdir, "$WORKDIR")
                ex = json.loads(text)
            if run.multi:
                ex = {"host": name, **ex}
            sr.exchanges.append(ex)
    _record_maps(run, sr, views)
    if sr.status == FAILED and sr.error and sr.error.startswith("command failed"):
        sr.error += _refused_address(sr.exchanges)
    sr.seconds = time.perf_counter() - started
    return sr


def _refused_address(exchanges: list[dict[str, Any]]) -> str:
    """Where the refused CHV request wanted to put the device, as a BDF, if it said."""
    for ex in reversed(exchanges):
        request = ex.get("request")
        if ex.get("status", 0) < 400 or not isinstance(request, dict):
            continue
        slot = request.get("pci_device_id")
        if not isinstance(slot, int):
            return ""
        segment = request.get("pci_segment", 0)
        segment = segment if isinstance(segment, int) else 0
        what = request.get("id", "the device")
        return (
            f" (CHV {ex.get('endpoint')} refused {what} at {segment:04x}:00:{slot:02x}.0 "
            "on the chv side)"
        )
    return ""


def _record_maps(run: _Run, sr: StepResult, views: dict[tuple[str, str], DomainView]) -> None:
    sr.maps = {side: {} for side in SIDES}
    for (h, d), view in sorted(views.items()):
        key = run.key(h, d)
        maps = domain_maps(view)
        for side in SIDES:
            sr.maps[side][key] = maps[side]
        present = [s for s in SIDES if side_present(view, s)]
        # a persistent device without an address (CHV v51 places it) agrees with any slot
        floating = {
            d.label
            for d in (view.persistent.devices() if view.persistent else [])
            if d.address is None
        }
        bdfs = sorted({b for s in present for b in maps[s]})
        for bdf in bdfs:
            labels = set()
            for s in present:
                entry = maps[s].get(bdf)
                if s == "persistent" and entry is None:
                    others = [maps[o].get(bdf) for o in present if o != "persistent"]
                    if any(e is not None and e.device in floating for e in others):
                        continue
                labels.add(entry.device if entry is not None else None)
            if len(labels) > 1:
                sr.differences.append(bdf if len(views) == 1 else f"{key} {bdf}")


async def _check_invariants(run: _Run, step: Step, extra: list[Violation]) -> list[Violation]:
    """Fail the step on an undeclared violation; return the declared/carried ones."""
    found: list[Violation] = list(extra)
    for host in run.hosts.values():
        for dom in host.domains():
            for v in await host.violations(dom):
                found.append(v)
    declared = set(step.violations)
    unexpected = []
    tolerated = []
    seen_rules = set()
    for v in found:
        key = (v.rule, v.device, v.side)
        seen_rules.add(v.rule)
        if v.rule in declared:
            run.accepted.add(key)
            tolerated.append(v)
        elif key in run.accepted:
            tolerated.append(v)
        else:
            unexpected.append(v)
    if unexpected:
        raise _StepFailure(_violation_text(unexpected), unexpected)
    missing = declared - seen_rules
    if missing:
        raise _StepFailure(
            f"expected violation(s) {', '.join(sorted(missing))} did not occur "
            "(the step declares them in 'violations:')"
        )
    return tolerated


def _violation_text(violations: list[Violation]) -> str:
    head = violations[0].message
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return head + more


async def _command_step(
    run: _Run, step: Step, host: Host, before: dict[str, Snapshot]
) -> list[Violation]:
    """Run a ``run``/``fail`` step; return the ``moved`` violations it caused."""
    cmd = step.command
    assert cmd is not None
    moved_before = await _stable_addresses(run, cmd, step.host)
    try:
        await execute(run.context(), cmd, step.host)
    except (OperationFailed, VirshError) as exc:
        if step.kind == "run":
            raise _StepFailure(f"command failed: {exc}") from None
        if step.message and step.message not in str(exc):
            raise _StepFailure(
                f"the command failed as expected, but its error does not contain "
                f"{step.message!r}: {exc}"
            ) from None
        run.refusal = str(exc)
        changed = []
        for name, other in run.hosts.items():
            changed += changed_after_failure(before[name], await _host_snap(other), name)
        return changed  # judged with the invariants (a step may declare them)
    if step.kind == "fail":
        raise _StepFailure("expected the command to fail, but it succeeded")
    return await _check_moved(run, cmd, step.host, moved_before)


# --------------------------------------------------------------------------- moved check
_KEEPS_ADDRESSES = {"reboot", "daemon-restart", "save", "managedsave", "restore", "start"}


async def _stable_addresses(
    run: _Run, cmd: Command, host_name: str
) -> dict[str, dict[str, dict[str, tuple[str, str | None]]]]:
    """Addresses before a command that must keep them: domain -> side -> addresses."""
    if cmd.name not in _KEEPS_ADDRESSES and cmd.name != "migrate":
        return {}
    snap = run.snaps.get(host_name)
    out = dict(snap.addresses) if snap is not None else {}
    if cmd.name in ("save", "managedsave"):
        domain = cmd.domain or ""
        key = str(cmd.get("file")) if cmd.name == "save" else f"managed:{domain}"
        if domain in out:
            run.saved[(host_name, key)] = (domain, out[domain]["live"])
    return out


async def _check_moved(
    run: _Run,
    cmd: Command,
    host_name: str,
    before: dict[str, dict[str, dict[str, tuple[str, str | None]]]],
) -> list[Violation]:
    host = run.hosts[host_name]
    found: list[Violation] = []
    name = cmd.name
    if name in ("reboot", "daemon-restart"):
        domains = [cmd.domain or ""] if name == "reboot" else list(before)
        for dom in domains:
            if dom not in before:
                continue
            view = await host.view(dom)
            now = side_addresses(view)
            for side in SIDES:
                found += check_unchanged(
                    before[dom][side], now[side], side=side, event=f"{name} of {dom}"
                )
    elif name in ("restore", "start"):
        key = str(cmd.get("file")) if name == "restore" else f"managed:{cmd.domain}"
        saved = run.saved.pop((host_name, key), None)
        if saved is not None:
            dom, addresses = saved
            view = await host.view(dom)
            event = "save/restore" if name == "restore" else "managedsave/start"
            found += check_unchanged(
                addresses, device_addresses(view.live), side="live", event=event
            )
            chv_now = chv_by_label(view)
            chv_after: Addresses = {
                k: (lbl, chv_now[lbl]) for k, (lbl, _bdf) in addresses.items() if lbl in chv_now
            }
            found += check_unchanged(addresses, chv_after, side="chv", event=event)
    elif name == "migrate":
        dest = run.hosts[str(cmd.get("desturi"))]
        dom = cmd.domain or ""
        if dom in before:
            view = await dest.view(dom)
            found += check_unchanged(
                before[dom]["live"], device_addresses(view.live), side="live", event="migration"
            )
            found += check_unchanged(
                before[dom]["chv"], side_addresses(view)["chv"], side="chv", event="migration"
            )
    return found


def _check_expectation(run: _Run, step: Step, exp: Expectation) -> None:
    if exp.in_sync:
        return  # the invariants ran already and would have failed the step
    try:
        domain = pick_domain(step.host, run.hosts[step.host].domains(), exp)
    except CheckFailed as exc:
        raise _StepFailure(str(exc)) from None
    view = run.views.get((step.host, domain)) or DomainView(domain, None)
    problems = expectation_problems(
        exp, view, host=step.host, snapshots=run.snapshots, key=run.key(step.host, domain)
    )
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if problems[1:] else ""
        raise _StepFailure(problems[0] + more)
