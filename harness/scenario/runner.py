"""Run scenarios against a target and record what happened.

A *target* is something that can host domains: :class:`ReferenceTarget` is this project's
reference driver (:class:`harness.driver.daemon.Driver`) on fakechv hypervisors, in this process
(fast) or as real ``fakechv`` processes; a real libvirt + Cloud Hypervisor installation
can plug in later by implementing :class:`Target` and :class:`Host`.

For each scenario and profile the runner opens one :class:`Host` per scenario host, each
in its own temporary directory, then runs the steps in order. After every step it checks,
on every domain of every host:

* the invariants of :mod:`harness.checks.invariants` (unless the step declares the violation);
* after a failed operation: nothing changed (both definitions' XML and CHV's ``vm.info``
  are identical before and after);
* after save/restore, managedsave + start, daemon-restart, reboot and migrate: no device
  address moved (live definition and CHV);
* the step's own expectations.

Everything is recorded in :mod:`harness.scenario.results` records: each step with its CHV API
exchanges, definition changes and the slot maps of the three sides. A failure names the
device, the BDF and the side. Several scenarios run in parallel in a process pool
(``jobs``), since the in-process simulation is CPU-bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from harness.checks.invariants import Violation, check_unchanged
from harness.errors import HarnessError
from harness.lifetime import adopt_orphans, check_interrupt, end_descendants, interrupts_raise
from harness.model.domain import Domain
from harness.model.virsh import Command, VirshError, detach_target_xml, disk_xml, interface_xml
from harness.scenario.load import (
    SIDES,
    DocumentAccess,
    Expectation,
    Scenario,
    ScenarioError,
    SlotSpec,
    Step,
    find_scenarios,
    load_scenario,
)
from harness.scenario.results import (
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    UNSUPPORTED,
    RunResult,
    ScenarioResult,
    SlotEntry,
    StepResult,
)
from harness.scenario.workers import WorkerPool

__all__ = [
    "TARGETS",
    "DomainView",
    "Host",
    "OperationFailed",
    "ReferenceHost",
    "ReferenceTarget",
    "Target",
    "UnsupportedOperation",
    "make_target",
    "run_paths",
    "run_scenario",
    "run_scenario_sync",
]


class OperationFailed(HarnessError):
    """The target refused or failed an operation (what ``fail:`` steps expect)."""


class UnsupportedOperation(HarnessError):
    """The target cannot perform this kind of step at all."""


# --------------------------------------------------------------------------- target interface
@dataclass
class DomainView:
    """One domain on one host, as the runner checks it."""

    name: str
    state: str | None  # "running", "paused", "shut off"; None: no such domain
    live: Domain | None = None
    persistent: Domain | None = None
    chv_info: dict[str, Any] | None = None
    #: CHV's PCI devices: BDF -> CHV device id
    chv_bdfs: dict[str, str] = field(default_factory=dict)
    #: CHV device id -> (label, class) of the live device it belongs to
    chv_owners: dict[str, tuple[str, str]] = field(default_factory=dict)


class Host(Protocol):
    """One management daemon (a virsh endpoint) with its hypervisors."""

    name: str
    workdir: Path

    async def define(self, xml: str, *, source: str) -> str: ...
    async def undefine(self, domain: str) -> None: ...
    async def create(self, xml: str, *, source: str) -> str: ...
    async def start(self, domain: str) -> None: ...
    async def destroy(self, domain: str) -> None: ...
    async def shutdown(self, domain: str) -> None: ...
    async def reboot(self, domain: str) -> None: ...
    async def managedsave(self, domain: str) -> None: ...
    async def save(self, domain: str, path: Path) -> None: ...
    async def restore(self, path: Path) -> str: ...
    async def attach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None: ...
    async def detach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None: ...
    async def daemon_restart(self) -> None: ...
    async def migrate(self, domain: str, dest: Host, options: dict[str, bool]) -> None: ...
    async def inject_fault(self, domain: str | None, rule: dict[str, Any]) -> None: ...

    def domains(self) -> list[str]: ...
    async def view(self, domain: str) -> DomainView: ...
    async def violations(self, domain: str) -> list[Violation]: ...
    def take_exchanges(self) -> list[dict[str, Any]]: ...
    async def close(self) -> None: ...


class Target(Protocol):
    """Where scenarios run: opens hosts."""

    name: str
    features: frozenset[str]  # e.g. {"faults"}; "migration" once supported

    async def open_host(
        self,
        name: str,
        workdir: Path,
        profile: str,
        *,
        segments: int = 1,
        eject: str = "immediate",
    ) -> Host: ...


# --------------------------------------------------------------------------- reference target
class _FaultingLauncher:
    """Wraps a launcher: fault rules queued for hypervisors that are not running yet."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.profile: str = inner.profile
        self.pending: list[dict[str, Any]] = []

    async def launch(self, name: str) -> Any:
        hv = await self.inner.launch(name)
        if self.pending:
            rules, self.pending = self.pending, []
            await _send_faults(hv.transport, rules)
        return hv

    async def reconnect(self, key: str) -> Any:
        return await self.inner.reconnect(key)

    async def terminate(self, hypervisor: Any) -> None:
        await self.inner.terminate(hypervisor)


async def _send_faults(transport: Any, rules: list[dict[str, Any]]) -> None:
    from fakechv.wire import ApiRequest

    body = json.dumps(rules).encode()
    resp = await transport.send(ApiRequest("PUT", "/fakechv/v1/faults", body))
    if resp.status >= 400:
        raise UnsupportedOperation(f"the hypervisor refused fault rules {rules}: {resp.body!r}")


class ReferenceHost:
    """A :class:`~harness.driver.daemon.Driver` on a state directory under ``workdir``."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        launcher: Any,
        segments: int,
        *,
        detach_timeout: float | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.launcher = _FaultingLauncher(launcher)
        self.segments = segments
        self.detach_timeout = detach_timeout
        self.driver: Any = None
        self._exchanges: list[dict[str, Any]] = []
        self._recording = True
        self._generation = 0
        self._info_cache: dict[tuple[int, str], dict[str, object] | None] = {}

    async def open(self) -> ReferenceHost:
        self.driver = await self._open_driver()
        return self

    async def _open_driver(self) -> Any:
        from harness.driver.daemon import Driver

        driver = await Driver.open(
            self.workdir / "state",
            self.launcher,
            segments=self.segments,
            observer=self._observe,
            **({} if self.detach_timeout is None else {"detach_timeout": self.detach_timeout}),
        )
        original = driver.chv_info

        async def chv_info(name: str) -> dict[str, object] | None:
            # The runner inspects a domain several times between two operations (maps,
            # invariants); nothing can change in between, so ask CHV once.
            if self._recording:
                return await original(name)
            key = (self._generation, name)
            if key not in self._info_cache:
                self._info_cache = {k: v for k, v in self._info_cache.items() if k[0] == key[0]}
                self._info_cache[key] = await original(name)
            return self._info_cache[key]

        driver.chv_info = chv_info  # type: ignore[method-assign]
        return driver

    def _observe(self, domain: str, exchange: Any) -> None:
        if not self._recording:
            return
        self._generation += 1
        self._exchanges.append(
            {
                "domain": domain,
                "method": exchange.method,
                "endpoint": exchange.endpoint,
                "request": exchange.request,
                "status": exchange.status,
                "response": exchange.response,
            }
        )

    def take_exchanges(self) -> list[dict[str, Any]]:
        out, self._exchanges = self._exchanges, []
        return out

    async def _call(self, coro: Any) -> Any:
        from harness.driver.daemon import DriverError

        self._generation += 1
        try:
            return await coro
        except DriverError as exc:
            raise OperationFailed(str(exc)) from exc
        except HarnessError as exc:
            raise OperationFailed(str(exc)) from exc

    async def define(self, xml: str, *, source: str) -> str:
        return str(await self._call(self.driver.define(xml, source=source)))

    async def undefine(self, domain: str) -> None:
        await self._call(self.driver.undefine(domain))

    async def create(self, xml: str, *, source: str) -> str:
        return str(await self._call(self.driver.create(xml, source=source)))

    async def start(self, domain: str) -> None:
        await self._call(self.driver.start(domain))

    async def destroy(self, domain: str) -> None:
        await self._call(self.driver.destroy(domain))

    async def shutdown(self, domain: str) -> None:
        await self._call(self.driver.shutdown(domain))

    async def reboot(self, domain: str) -> None:
        await self._call(self.driver.reboot(domain))

    async def managedsave(self, domain: str) -> None:
        await self._call(self.driver.managedsave(domain))

    async def save(self, domain: str, path: Path) -> None:
        await self._call(self.driver.save(domain, path))

    async def restore(self, path: Path) -> str:
        return str(await self._call(self.driver.restore(path)))

    async def attach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        from harness.driver.daemon import AttachFlags

        await self._call(
            self.driver.attach_device(domain, xml, AttachFlags(**flags), source=source)
        )

    async def detach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        from harness.driver.daemon import AttachFlags

        await self._call(
            self.driver.detach_device(domain, xml, AttachFlags(**flags), source=source)
        )

    async def daemon_restart(self) -> None:
        self._generation += 1
        await self.driver.close()
        self.driver = await self._call(self._open_driver())

    async def migrate(self, domain: str, dest: Host, options: dict[str, bool]) -> None:
        if not isinstance(dest, ReferenceHost):
            raise UnsupportedOperation("the reference driver migrates only to reference hosts")
        if options.get("offline"):
            raise UnsupportedOperation("offline migration is not part of the CH driver")
        dest._generation += 1  # the destination changes too
        await self._call(
            self.driver.migrate(
                domain,
                dest.driver,
                live=bool(options.get("live")),
                p2p=bool(options.get("p2p")),
                persistent=bool(options.get("persistent")),
                undefinesource=bool(options.get("undefinesource")),
            )
        )

    async def inject_fault(self, domain: str | None, rule: dict[str, Any]) -> None:
        rule = {k: v for k, v in rule.items() if k != "domain"}
        names = [domain] if domain else self.domains()
        running = [
            self.driver.domains[n]
            for n in names
            if n in self.driver.domains and self.driver.domains[n].hypervisor is not None
        ]
        if (domain and running) or (not domain and len(running) == 1):
            await _send_faults(running[0].hypervisor.transport, [rule])
        else:
            self.launcher.pending.append(rule)

    def domains(self) -> list[str]:
        return list(self.driver.list_domains())

    async def view(self, domain: str) -> DomainView:
        from harness.chv.translate import chv_id
        from harness.driver.daemon import chv_bdfs

        rec = self.driver.domains.get(domain)
        if rec is None:
            return DomainView(domain, None)
        view = DomainView(domain, rec.state, rec.live, rec.persistent)
        if rec.client is not None:
            with self._quiet():
                view.chv_info = await self.driver.chv_info(domain)
        if view.chv_info is not None:
            view.chv_bdfs = {bdf: cid for cid, bdf in chv_bdfs(view.chv_info).items()}
        if rec.live is not None:
            for device in rec.live.devices():
                try:
                    cid = chv_id(device, self.driver.caps)
                except (KeyError, HarnessError):
                    continue
                view.chv_owners[cid] = (device.label, device.cls.value)
        return view

    async def violations(self, domain: str) -> list[Violation]:
        from harness.checks.invariants import check_domain

        with self._quiet():
            return list(await check_domain(self.driver, domain))

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """The runner's own queries: not part of the trace, not spec-checked again."""
        clients = [r.client for r in self.driver.domains.values() if r.client is not None]
        profiles = [c.profile for c in clients]
        self._recording = False
        for c in clients:
            c.profile = None
        try:
            yield
        finally:
            self._recording = True
            for c, p in zip(clients, profiles, strict=True):
                c.profile = p

    async def close(self) -> None:
        if self.driver is not None:
            for name, rec in list(self.driver.domains.items()):
                if rec.hypervisor is not None:
                    try:
                        await self.launcher.terminate(rec.hypervisor)
                    except Exception:  # pragma: no cover - best-effort cleanup
                        pass
                del name
            await self.driver.close()


#: the driver's detach timeout when the simulated guest never ejects (scenarios stay fast)
NEVER_EJECT_TIMEOUT = 0.2


class ReferenceTarget:
    """The reference driver on fakechv: in-process VMMs, or ``fakechv`` processes."""

    features = frozenset({"faults", "migration"})

    def __init__(self, *, processes: bool = False) -> None:
        self.processes = processes
        self.name = "reference-process" if processes else "reference"

    async def open_host(
        self,
        name: str,
        workdir: Path,
        profile: str,
        *,
        segments: int = 1,
        eject: str = "immediate",
    ) -> ReferenceHost:
        """``eject``: when the simulated guest ejects removed devices (``immediate``,
        ``never`` or a delay in ms); with ``never`` the driver gives up after 0.2 s."""
        from harness.driver.launcher import InProcessLauncher, ProcessLauncher

        launcher: Any
        if self.processes:
            launcher = ProcessLauncher(profile, run_dir=workdir / "run", eject=eject)
        else:
            launcher = InProcessLauncher(profile, eject=eject)
        timeout = NEVER_EJECT_TIMEOUT if eject == "never" else None
        host = ReferenceHost(name, workdir, launcher, segments, detach_timeout=timeout)
        return await host.open()


def _libvirt_target() -> Target:
    from harness.targets.libvirt import LibvirtTarget  # needs tools/build-libvirt.sh

    target: Target = LibvirtTarget()
    return target


TARGETS: dict[str, Callable[[], Target]] = {
    "reference": lambda: ReferenceTarget(),
    "reference-process": lambda: ReferenceTarget(processes=True),
    "libvirt": _libvirt_target,
}


def make_target(name: str) -> Target:
    try:
        return TARGETS[name]()
    except KeyError:
        raise HarnessError(
            f"unknown target {name!r} (known: {', '.join(sorted(TARGETS))})"
        ) from None


# --------------------------------------------------------------------------- maps and diffs
Maps = dict[str, dict[str, SlotEntry]]  # side -> BDF -> entry (one domain)


def _domain_maps(view: DomainView) -> Maps:
    maps: Maps = {side: {} for side in SIDES}
    for side, dom in (("live", view.live), ("persistent", view.persistent)):
        if dom is None:
            continue
        for device in dom.devices():
            addr = device.address
            if addr is not None:
                maps[side][addr.to_chv_bdf()] = SlotEntry(
                    device.label, device.cls.value, device.alias
                )
    for bdf, cid in view.chv_bdfs.items():
        label, cls = view.chv_owners.get(cid, (f"CHV device {cid}", "unknown"))
        maps["chv"][bdf] = SlotEntry(label, cls, cid)
    return maps


def _addresses(dom: Domain | None) -> dict[str, tuple[str, str | None]]:
    if dom is None:
        return {}
    out = {}
    for d in dom.devices():
        addr = d.address
        out["/".join(d.key)] = (d.label, addr.to_chv_bdf() if addr else None)
    return out


Addresses = dict[str, tuple[str, str | None]]  # device key -> (label, BDF)


def _side_addresses(view: DomainView) -> dict[str, Addresses]:
    """side -> addresses; the chv side is keyed by label (CHV knows no libvirt keys)."""
    chv: Addresses = {lbl: (lbl, bdf) for lbl, bdf in _chv_by_label(view).items()}
    return {"live": _addresses(view.live), "persistent": _addresses(view.persistent), "chv": chv}


def _chv_by_label(view: DomainView) -> dict[str, str]:
    return {
        view.chv_owners.get(cid, (f"CHV device {cid}", ""))[0]: bdf
        for bdf, cid in view.chv_bdfs.items()
    }


@dataclass
class _Snap:
    """Everything about a host's domains that a failed step must not change."""

    state: dict[str, str | None]
    persistent: dict[str, str | None]
    live: dict[str, str | None]
    info: dict[str, str | None]
    addresses: dict[str, dict[str, dict[str, tuple[str, str | None]]]]


def _xml(dom: Domain | None) -> str | None:
    return None if dom is None else dom.to_xml()


# --------------------------------------------------------------------------- the run
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
    snaps: dict[str, _Snap] = field(default_factory=dict)

    def key(self, host: str, domain: str) -> str:
        return f"{host}/{domain}" if self.multi else domain


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
        result.failure = (
            f"requires {', '.join(missing)}, which target {target.name} does not support yet"
        )
        result.steps = [StepResult(s.index, s.text, s.host, status=SKIPPED) for s in scenario.steps]
        return result
    run = _Run(scenario, profile, target, multi=len(scenario.hosts) > 1)
    base = workdir or _default_workdir()
    with tempfile.TemporaryDirectory(prefix="bdf-scenario-", dir=base) as tmp:
        run.workdir = str(Path(tmp).resolve())
        try:
            for host in scenario.hosts:
                hostdir = Path(tmp) / host
                hostdir.mkdir()
                run.hosts[host] = await target.open_host(
                    host, hostdir, profile, segments=scenario.segments, eject=scenario.eject
                )
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
                        StepResult(step.index, step.text, step.host, status=SKIPPED)
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


def _default_workdir() -> Path | None:
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
        run.snaps[hname] = _snap_of(views)
        for dom, view in views.items():
            run.views[(hname, dom)] = view


async def _host_snap(host: Host) -> _Snap:
    """A full snapshot (XML texts and vm.info too), for the checks of a failing step."""
    return _snap_of({dom: await host.view(dom) for dom in host.domains()}, full=True)


def _snap_of(views: dict[str, DomainView], *, full: bool = False) -> _Snap:
    snap = _Snap({}, {}, {}, {}, {})
    for dom, view in views.items():
        snap.state[dom] = view.state
        snap.addresses[dom] = _side_addresses(view)
        if full:
            snap.persistent[dom] = _xml(view.persistent)
            snap.live[dom] = _xml(view.live)
            info = view.chv_info
            snap.info[dom] = json.dumps(info, sort_keys=True) if info is not None else None
    return snap


def _unchanged(before: _Snap, after: _Snap, host: str) -> list[Violation]:
    """Violations (``changed-after-failure``) for anything a failed step changed."""
    out: list[Violation] = []
    for dom in sorted(set(before.state) | set(after.state)):
        if dom not in after.state:
            out.append(_changed(f"domain {dom}", "host", "present", None, f"{host}: vanished"))
            continue
        if dom not in before.state:
            out.append(_changed(f"domain {dom}", "host", None, "present", f"{host}: appeared"))
            continue
        if before.state[dom] != after.state[dom]:
            out.append(
                _changed(
                    f"domain {dom}", "state", before.state[dom], after.state[dom], "state changed"
                )
            )
        for side in SIDES:
            b = before.addresses[dom][side]
            a = after.addresses[dom][side]
            for key in sorted(set(b) | set(a)):
                if b.get(key) != a.get(key):
                    label = (b.get(key) or a.get(key) or (key, None))[0]
                    out.append(
                        _changed(
                            label,
                            side,
                            b[key][1] if key in b else None,
                            a[key][1] if key in a else None,
                            f"{dom}: a failed step must not change the {side} side",
                        )
                    )
        if not out and dom in before.live:
            for side, b_text, a_text in (
                ("persistent", before.persistent[dom], after.persistent[dom]),
                ("live", before.live[dom], after.live[dom]),
                ("chv", before.info[dom], after.info[dom]),
            ):
                if b_text != a_text:
                    what = "vm.info" if side == "chv" else f"{side} XML"
                    out.append(
                        _changed(
                            f"domain {dom}",
                            side,
                            "unchanged",
                            "changed",
                            f"{what} differs: {_first_difference(b_text, a_text)}",
                        )
                    )
    return out


def _changed(device: str, side: str, exp: str | None, act: str | None, detail: str) -> Violation:
    return Violation("changed-after-failure", device, side, exp, act, detail)


def _first_difference(a: str | None, b: str | None) -> str:
    """Where two texts (XML, or vm.info JSON) first differ, briefly."""
    try:
        return _json_difference(json.loads(a or "null"), json.loads(b or "null"), "") or "?"
    except ValueError:
        pass
    a_lines = (a or "").splitlines()
    b_lines = (b or "").splitlines()
    for i, (x, y) in enumerate(zip(a_lines, b_lines, strict=False)):
        if x != y:
            return f"line {i + 1}: {_brief(x.strip())} -> {_brief(y.strip())}"
    return f"{len(a_lines)} lines -> {len(b_lines)} lines"


def _brief(value: object, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_difference(a: object, b: object, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in b:
                return f"{path}.{key} removed (was {_brief(a[key])})"
            if key not in a:
                return f"{path}.{key} added ({_brief(b[key])})"
            found = _json_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _json_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        if len(a) != len(b):
            extra = a[len(b) :] if len(a) > len(b) else b[len(a) :]
            what = "removed" if len(a) > len(b) else "added"
            return f"{path or '.'}: {len(a)} -> {len(b)} items, {what} {_brief(extra)}"
        return None
    if a != b:
        return f"{path or '.'}: {_brief(a)} -> {_brief(b)}"
    return None


def _changes(before: _Snap, after: _Snap) -> list[str]:
    """Human-readable definition changes (device addresses) between two snapshots."""
    out: list[str] = []
    for dom in sorted(set(before.state) | set(after.state)):
        if dom not in before.state:
            out.append(f"{dom}: domain appeared ({after.state[dom]})")
        elif dom not in after.state:
            out.append(f"{dom}: domain removed")
            continue
        elif before.state[dom] != after.state[dom]:
            out.append(f"{dom}: {before.state[dom]} -> {after.state[dom]}")
        for side in ("live", "persistent"):
            b = before.addresses.get(dom, {}).get(side, {})
            a = after.addresses[dom][side]
            for key in sorted(set(b) | set(a)):
                if key not in b:
                    out.append(f"{dom} {side}: + {a[key][0]} at {a[key][1] or 'no address'}")
                elif key not in a:
                    out.append(f"{dom} {side}: - {b[key][0]} (was {b[key][1] or 'no address'})")
                elif a[key][1] != b[key][1]:
                    out.append(f"{dom} {side}: {a[key][0]} {b[key][1]} -> {a[key][1]}")
    return out


async def _run_step(run: _Run, step: Step) -> StepResult:
    sr = StepResult(step.index, step.text, step.host)
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
                run.key(h, d): _domain_maps(v) for (h, d), v in run.views.items()
            }
        if step.kind != "snapshot":
            for v in await _check_invariants(run, step, extra):
                sr.violations.append({**v.as_dict(), "expected": True})
        if step.kind == "expect":
            assert step.expect is not None
            await _check_expectation(run, step, step.expect)
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
            for line in _changes(before[name], after[name]):
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
        maps = _domain_maps(view)
        for side in SIDES:
            sr.maps[side][key] = maps[side]
        present = [s for s in SIDES if _side_present(view, s)]
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


def _side_present(view: DomainView, side: str) -> bool:
    if side == "live":
        return view.live is not None
    if side == "persistent":
        return view.persistent is not None
    return view.chv_info is not None


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


# --------------------------------------------------------------------------- commands
def _flags(cmd: Command) -> dict[str, bool]:
    return cmd.device_flags()


async def _command_step(
    run: _Run, step: Step, host: Host, before: dict[str, _Snap]
) -> list[Violation]:
    """Run a ``run``/``fail`` step; return the ``moved`` violations it caused."""
    cmd = step.command
    assert cmd is not None
    moved_before = await _stable_addresses(run, cmd, step.host)
    try:
        await _execute(run, cmd, step.host)
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
            changed += _unchanged(before[name], await _host_snap(other), name)
        return changed  # judged with the invariants (a step may declare them)
    if step.kind == "fail":
        raise _StepFailure("expected the command to fail, but it succeeded")
    return await _check_moved(run, cmd, step.host, moved_before)


async def _execute(run: _Run, cmd: Command, host_name: str) -> None:
    host = run.hosts[host_name]
    scenario = run.scenario
    name = cmd.name
    domain = cmd.domain or ""
    if name in ("define", "create"):
        doc = scenario.document(str(cmd.get("file")))
        if name == "define":
            await host.define(doc.text, source=doc.source)
        else:
            await host.create(doc.text, source=doc.source)
    elif name == "undefine":
        await host.undefine(domain)
    elif name in ("start", "destroy", "shutdown", "reboot", "managedsave"):
        await getattr(host, name)(domain)
    elif name in ("attach-device", "detach-device"):
        doc = scenario.document(str(cmd.get("file")))
        op = host.attach_device if name == "attach-device" else host.detach_device
        await op(domain, doc.text, _flags(cmd), source=doc.source)
    elif name == "attach-disk":
        xml = disk_xml(cmd)
        _check_virsh_address(cmd, scenario.segments)
        await host.attach_device(domain, xml, _flags(cmd), source="attach-disk")
    elif name == "attach-interface":
        await host.attach_device(domain, interface_xml(cmd), _flags(cmd), source="attach-interface")
    elif name in ("detach-disk", "detach-interface"):
        xml = _find_device_xml(run, host_name, cmd)
        await host.detach_device(domain, xml, _flags(cmd), source=name)
    elif name == "save":
        await host.save(domain, _scratch(host, str(cmd.get("file"))))
    elif name == "restore":
        await host.restore(_scratch(host, str(cmd.get("file"))))
    elif name == "daemon-restart":
        await host.daemon_restart()
    elif name == "migrate":
        dest = run.hosts[str(cmd.get("desturi"))]
        options = {k: v for k, v in cmd.args.items() if isinstance(v, bool)}
        await host.migrate(domain, dest, options)
    else:  # pragma: no cover - the loader only accepts known commands
        raise UnsupportedOperation(f"command {name} is not implemented by the runner")


def _check_virsh_address(cmd: Command, segments: int) -> None:
    """The reference front end checks ``--address`` before it becomes XML (semantics V2).

    virsh itself writes any four hex fields into the XML, and libvirt reads an all-zero
    address as "no address" (auto-assigned); the reference refuses what CHV cannot honour,
    so ``pci:0.0.00.0`` (the host bridge, catalogue I4) fails instead of moving elsewhere.
    """
    text = cmd.get("address")
    if text is None or not text.startswith("pci:"):
        return
    from harness.model.address import PciAddress, validate_for_chv

    try:
        addr = PciAddress.from_virsh(text)
        validate_for_chv(addr, segments=segments, device=f"disk {cmd.get('target')}")
    except HarnessError as exc:
        raise OperationFailed(str(exc)) from None


def _scratch(host: Host, name: str) -> Path:
    path = Path(name)
    if path.is_absolute():
        path = Path(*path.parts[1:])
    scratch = host.workdir / "scratch"
    scratch.mkdir(exist_ok=True)
    return scratch / path


def _find_device_xml(run: _Run, host_name: str, cmd: Command) -> str:
    """What virsh detach-disk / detach-interface look up in the domain XML."""
    domain = cmd.domain or ""
    view = run.views.get((host_name, domain)) or DomainView(domain, None)
    if view.state is None:
        raise VirshError(f"failed to get domain '{domain}'")
    return detach_target_xml(cmd, live=view.live, persistent=view.persistent)


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
            now = _side_addresses(view)
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
            found += check_unchanged(addresses, _addresses(view.live), side="live", event=event)
            chv_now = _chv_by_label(view)
            chv_after = {
                k: (lbl, chv_now[lbl]) for k, (lbl, _bdf) in addresses.items() if lbl in chv_now
            }  # type: Addresses
            found += check_unchanged(addresses, chv_after, side="chv", event=event)
    elif name == "migrate":
        dest = run.hosts[str(cmd.get("desturi"))]
        dom = cmd.domain or ""
        if dom in before:
            view = await dest.view(dom)
            found += check_unchanged(
                before[dom]["live"], _addresses(view.live), side="live", event="migration"
            )
            found += check_unchanged(
                before[dom]["chv"], _side_addresses(view)["chv"], side="chv", event="migration"
            )
    return found


# --------------------------------------------------------------------------- expectations
def _pick_domain(run: _Run, host_name: str, exp: Expectation) -> str:
    host = run.hosts[host_name]
    if exp.domain:
        return exp.domain
    doms = host.domains()
    if len(doms) == 1:
        return doms[0]
    if not doms:
        raise _StepFailure(f"host {host_name} has no domain to check")
    raise _StepFailure(
        f"host {host_name} has several domains ({', '.join(doms)}): the expectation needs 'domain:'"
    )


async def _check_expectation(run: _Run, step: Step, exp: Expectation) -> None:
    if exp.in_sync:
        return  # the invariants ran already and would have failed the step
    domain = _pick_domain(run, step.host, exp)
    view = run.views.get((step.host, domain)) or DomainView(domain, None)
    problems: list[str] = []
    if exp.state is not None:
        actual = view.state or "absent"
        if actual != exp.state:
            problems.append(f"domain {domain} on {step.host} is {actual}, expected {exp.state}")
    maps = _domain_maps(view)
    for side, want in exp.sides.items():
        if exp.device is not None:
            assert isinstance(want, str)
            got = next((b for b, e in maps[side].items() if e.device == exp.device), None)
            expected = None if want == "absent" else want
            if got != expected:
                problems.append(
                    f"{exp.device}: {side} has {got or 'nothing'}, expected "
                    f"{expected or 'absent'} (domain {domain})"
                )
            continue
        if isinstance(want, list):
            problems += _check_slots(side, maps[side], want, exp.exact, domain)
        elif want.startswith("same-as-"):
            other = want[len("same-as-") :]
            problems += _compare_maps(side, maps[side], other, maps[other], domain)
        else:
            snap_name = want[len("snapshot ") :]
            snap = _snapshot_of(run.snapshots.get(snap_name, {}), run.key(step.host, domain))
            if snap is None:
                problems.append(f"snapshot {snap_name} has no domain {domain} on {step.host}")
            else:
                problems += _compare_maps(
                    side, maps[side], f"snapshot {snap_name}", snap[side], domain
                )
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if problems[1:] else ""
        raise _StepFailure(problems[0] + more)


def _snapshot_of(snapshot: dict[str, Maps], key: str) -> Maps | None:
    """The maps of ``key`` ("host/domain") in a snapshot, or of the same domain taken on
    another host (a migration scenario compares the destination with the source)."""
    if key in snapshot:
        return snapshot[key]
    domain = key.rsplit("/", 1)[-1]
    same = [maps for k, maps in snapshot.items() if k.rsplit("/", 1)[-1] == domain]
    return same[0] if len(same) == 1 else None


def _describe(entry: SlotEntry | None) -> str:
    return "empty" if entry is None else entry.device


def _check_slots(
    side: str, actual: dict[str, SlotEntry], specs: list[SlotSpec], exact: bool, domain: str
) -> list[str]:
    out = []
    listed = set()
    for spec in specs:
        listed.add(spec.bdf)
        entry = actual.get(spec.bdf)
        if spec.value == "empty":
            ok = entry is None
        elif spec.is_class:
            ok = entry is not None and entry.cls == spec.value
        else:
            ok = entry is not None and entry.device == spec.value
        if not ok:
            out.append(
                f"{side} slot {spec.bdf} of {domain}: expected {spec.value}, found "
                f"{_describe(entry)}"
            )
    if exact:
        for bdf, entry in sorted(actual.items()):
            if bdf not in listed:
                out.append(
                    f"{side} slot {bdf} of {domain}: expected empty (exact), found {entry.device}"
                )
    return out


def _compare_maps(
    side: str,
    actual: dict[str, SlotEntry],
    other_name: str,
    other: dict[str, SlotEntry],
    domain: str,
) -> list[str]:
    out = []
    for bdf in sorted(set(actual) | set(other)):
        a, b = actual.get(bdf), other.get(bdf)
        if _describe(a) != _describe(b):
            out.append(
                f"{side} slot {bdf} of {domain}: has {_describe(a)}, but {other_name} has "
                f"{_describe(b)}"
            )
    return out


# --------------------------------------------------------------------------- many scenarios
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
        return [_load_error(Path(path), str(exc), target)]
    profiles = [profile] if profile else scenario.profiles
    tgt = make_target(target)
    return [asyncio.run(run_scenario(scenario, p, tgt)) for p in profiles]


def _run_one(
    path: str,
    profile: str,
    target: str,
    access: DocumentAccess | None = None,
    workdir: str | None = None,
) -> ScenarioResult:
    try:
        scenario = load_scenario(path, access)
    except ScenarioError as exc:
        return _load_error(Path(path), str(exc), target)
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


def _load_error(path: Path, message: str, target: str) -> ScenarioResult:
    return ScenarioResult(path.stem, str(path), "", "-", target, status=ERROR, failure=message)


def plan(
    paths: Iterable[Path | str],
    profile: str | None = None,
    access: DocumentAccess | None = None,
) -> list[tuple[str, str] | ScenarioResult]:
    """(file, profile) pairs to run, or an ERROR result for each file that does not load."""
    out: list[tuple[str, str] | ScenarioResult] = []
    for path in find_scenarios(paths):
        try:
            scenario = load_scenario(path, access)
        except ScenarioError as exc:
            out.append(_load_error(path, str(exc), ""))
            continue
        for p in [profile] if profile else scenario.profiles:
            out.append((str(path), p))
    return out


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

    async def exercise(profile: str) -> None:
        with tempfile.TemporaryDirectory(dir=_default_workdir()) as tmp:
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
) -> RunResult:
    """Run every scenario under ``paths``; ``jobs`` > 1 runs them in a process pool.

    A scenario reads documents from its own folder, the current directory and the
    folders in ``paths`` only, unless ``allow_outside_documents``.

    Results come back in a stable order (file, then the scenario's profile order).
    ScenarioError if a path does not exist; unknown target: HarnessError.

    Ctrl-C, SIGTERM or SIGHUP stop the run: the workers and the hypervisors they
    started are ended, the run's temporary directory is removed, and the result
    holds the runs that finished, with ``interrupted`` set.
    """
    make_target(target)  # fail early on an unknown target
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    paths = list(paths)
    access = DocumentAccess.for_paths(paths, allow_outside_documents)
    items = plan(paths, profile, access)
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
    session = Path(tempfile.mkdtemp(prefix="bdf-run-", dir=_default_workdir()))
    try:
        with interrupts_raise():
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
        shutil.rmtree(session, ignore_errors=True)
    run = RunResult(
        scenarios=[results[i] for i in sorted(results)],
        target=target,
        started=started,
        seconds=time.perf_counter() - t0,
        interrupted=interrupted,
        planned=len(items),
    )
    return run
