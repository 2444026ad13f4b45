"""A hypothesis state machine over the reference driver: random virsh-like sequences.

:class:`BdfMachine` drives one :class:`~harness.driver.daemon.Driver` on in-process fakechv VMMs
(:class:`~harness.driver.launcher.InProcessLauncher`) through define, undefine, create, start,
destroy, shutdown, reboot, attach and detach of disks, interfaces and other device
classes with every flag combination and with valid and invalid explicit addresses,
save/restore, managedsave + start, daemon restarts, injected CHV faults and (optionally) a
guest that never ejects (``eject="never"``: every live detach times out). With
``migration=True`` it runs two daemons (``src``, ``dst``) and adds ``migrate`` and a rule
that moves the later steps to the other host. After every step it checks, on every
domain of every host, with :mod:`harness.checks.invariants`:

* no duplicate address in a definition, every device addressed, live vs CHV's device
  tree both ways, live vs persistent (``check_domain``);
* reboot, daemon restart, save/restore, managedsave + start, destroy + start and
  migration moved no address (``check_unchanged``: rule ``moved``);
* a step the driver refused changed nothing: both definitions' XML, the domain state and
  CHV's ``vm.info`` are identical before and after (rule ``changed-after-failure``).

Every executed step is recorded as a scenario step (``run:``/``fail:`` with a command of
``docs/scenario-format.md``, or a ``fault:``) in a :class:`Trace`, so a failing run can
be written out as a scenario file by :mod:`harness.explore.reproducer` and replayed with the
scenario runner.

Use :func:`machine_class` to get a machine class for a CHV profile and
:func:`run_machine` to run it under hypothesis settings and export the shrunk failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from harness.checks.invariants import (
    Violation,
    addresses,
    check_definitions,
    check_unchanged,
)
from harness.checks.snapshot import Snapshot, changed_after_failure, snapshot_of
from harness.chv.info import chv_bdfs
from harness.chv.translate import chv_kind
from harness.driver.daemon import Driver
from harness.driver.launcher import InProcessLauncher
from harness.driver.records import AttachFlags, DriverError
from harness.driver.selfcheck import domain_view
from harness.errors import HarnessError
from harness.model.domain import Device, Domain
from harness.model.virsh import Command, VirshError, parse_command
from harness.scenario.interpret import Context, execute
from harness.scenario.model import Document
from harness.targets.base import OperationFailed

__all__ = [
    "DOMAIN",
    "DOMAIN_XML",
    "KNOWN_DESYNCS",
    "OPEN_DESYNCS",
    "BdfMachine",
    "InvariantFailure",
    "MachineRun",
    "Trace",
    "TraceStep",
    "close_loop",
    "machine_class",
    "register_profiles",
    "run_machine",
]

T = TypeVar("T")

DOMAIN = "testvm"
#: the domain every run starts from (no explicit addresses, so every CHV release takes it)
DOMAIN_XML = f"""<domain type='kvm'>
  <name>{DOMAIN}</name>
  <uuid>8f7e0f3c-6a51-4a1e-9d8b-3f0c2c1b5a01</uuid>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>/etc/CLOUDHV.fd</kernel>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/nfs/vda.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='ethernet'>
      <mac address='52:54:00:00:00:01'/>
      <target dev='tap1' managed='no'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
"""

DISK_TARGETS = ("vdb", "vdc", "vdd", "vde")
NIC_MACS = ("52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:04")
#: virsh flag sets (never an exclusive pair: virsh rejects those before libvirt sees them)
FLAG_SETS = ("", "--live", "--config", "--live --config", "--persistent", "--current")
SAVE_IMAGES = ("img1", "img2")
#: ``virsh migrate`` flag sets; the CH driver migrates only with --live --p2p
MIGRATE_FLAGS = (
    "--live --p2p",
    "--live --p2p --persistent",
    "--live --p2p --persistent --undefinesource",
    "--live --p2p --undefinesource",
    "--p2p",
)
#: explicit address kinds of attach steps
ADDRESS_KINDS = (
    "none",
    "none",
    "slot",
    "taken",
    "out-of-range",
    "slot-zero",
    "function",
    "segment",
)

#: other device classes, attached with ``attach-device`` (user aliases make them findable)
OTHER_DEVICES: dict[str, str] = {
    "fs-share": (
        "<filesystem type='mount' accessmode='passthrough'>\n"
        "  <driver type='virtiofs'/>\n"
        "  <source socket='/run/virtiofsd-share.sock'/>\n"
        "  <target dir='share'/>\n"
        "  <alias name='ua-share'/>\n"
        "</filesystem>\n"
    ),
    "pmem0": (
        "<memory model='nvdimm'>\n"
        "  <source>\n"
        "    <path>/nfs/pmem0.img</path>\n"
        "  </source>\n"
        "  <target>\n"
        "    <size unit='KiB'>524288</size>\n"
        "  </target>\n"
        "  <alias name='ua-pmem0'/>\n"
        "</memory>\n"
    ),
    # CHV cannot hot-plug a balloon: config-only
    "balloon": "<memballoon model='virtio'>\n  <alias name='ua-balloon'/>\n</memballoon>\n",
    # nor a watchdog, which no release lets the driver place
    "watchdog": (
        "<watchdog model='i6300esb' action='reset'>\n  <alias name='ua-wd'/>\n</watchdog>\n"
    ),
}


#: desyncs of the reference driver this machine found; ``avoid`` steers around them
KNOWN_DESYNCS = {
    "restore-conflict": (
        "a save image restored after a config-only attach gave the same device another "
        "slot: live and persistent disagree after the restore (also for an image restored "
        "a second time)"
    ),
    "explicit-vs-twin": (
        "a live attach with an explicit address is accepted although the same device "
        "already has another address in the persistent definition (or the reverse)"
    ),
    "pending-eject-rebuild": (
        "after a detach timed out (the guest has not ejected), a reboot rebuilds CHV "
        "without the device while the live definition keeps it"
    ),
    "pending-eject-restore": (
        "after a detach timed out (the guest has not ejected), save + restore or "
        "managedsave + start gives a CHV without the device while the restored live "
        "definition keeps it"
    ),
    "pending-eject-migrate": (
        "after a detach timed out (the guest has not ejected), a migration gives the "
        "destination a CHV without the device while its live definition keeps it"
    ),
    "config-unaddressable": (
        "under a release that cannot place a class (v52: memballoon), a config-only attach "
        "leaves the device without an address although define gives it one"
    ),
    "unaddressable-vs-saved": (
        "under a release that cannot place a class (v52: memballoon), a config-only attach "
        "while a save image reserves a slot predicted a slot past the reservation, but CHV "
        "places the device itself at the lowest free slot on the next start"
    ),
    "unaddressable-prediction": (
        "under a release that cannot place a class (v52: memballoon), the slot the driver "
        "predicts at a config-only attach goes stale when a later config detach frees a "
        "lower slot: CHV places the device itself at the lowest free slot on the next start"
    ),
    "unpinnable-order": (
        "two devices CHV places itself (v52: a watchdog and a memballoon) attached "
        "config-only get predicted slots in another order than CHV creates them in"
    ),
    "unpinnable-repredict": (
        "while the domain runs (or a save image will restore it), a config detach below a "
        "device CHV places itself (v52: memballoon) re-predicts its persistent slot into "
        "the hole; the live definition keeps the slot CHV gave it, so live and persistent "
        "disagree"
    ),
    "unpinnable-reboot": (
        "a device CHV places itself (a watchdog, in every release) moves on reboot into a "
        "lower slot a live-only detach freed: CHV recomputes implicit slots"
    ),
}


#: the known desyncs the reference driver still has (the others are fixed and explored)
OPEN_DESYNCS = frozenset({"unpinnable-repredict", "unpinnable-reboot"})


class InvariantFailure(AssertionError):
    """An invariant broke after a step: carries the violations and the step."""

    def __init__(self, step: str, violations: list[Violation]) -> None:
        self.step = step
        self.violations = violations
        lines = "\n  ".join(v.message for v in violations)
        super().__init__(f"after `{step}`:\n  {lines}")

    @property
    def rules(self) -> list[str]:
        return sorted({v.rule for v in self.violations})


@dataclass
class TraceStep:
    """One executed step: ``kind`` is run, fail or fault (as in a scenario file)."""

    kind: str
    text: str
    fault: dict[str, Any] | None = None
    error: str = ""
    #: invariant rules the step is known to break (a timed-out detach leaves CHV changed)
    violations: tuple[str, ...] = ()
    #: the host the step runs on ("" or the first host: the scenario's default)
    host: str = ""


@dataclass
class Trace:
    """The steps of one example, the documents they use, and the failure if any."""

    profile: str
    eject: str = "immediate"
    steps: list[TraceStep] = field(default_factory=list)
    hosts: list[str] = field(default_factory=lambda: ["host"])
    documents: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    rules: list[str] = field(default_factory=list)
    failed_step: int | None = None  # index into steps


@dataclass
class _Host:
    """One daemon of the run: its driver, launcher, scratch directory and what the
    machine remembers about its domain."""

    name: str
    root: Path
    launcher: InProcessLauncher
    driver: Driver | None = None
    #: live and CHV addresses at save/managedsave, by image ("managed" for managedsave)
    saved: dict[str, tuple[dict[Any, Any], dict[Any, Any]]] = field(default_factory=dict)
    #: live addresses of persistent devices at the last destroy/shutdown
    stopped: dict[Any, Any] | None = None
    #: a live detach timed out and the guest has not ejected the device yet
    pending_eject: bool = False

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"


class _Operations:
    """One host of the machine, driven by the step interpreter: the command operations
    of :class:`harness.targets.base.Host` on the host's driver (errors pass through)."""

    def __init__(self, machine: BdfMachine, host: _Host) -> None:
        self.machine = machine
        self.host = host
        self.workdir = host.root

    @property
    def driver(self) -> Driver:
        assert self.host.driver is not None
        return self.host.driver

    async def define(self, xml: str, *, source: str) -> str:
        return await self.driver.define(xml, source=source)

    async def create(self, xml: str, *, source: str) -> str:
        return await self.driver.create(xml, source=source)

    async def undefine(self, domain: str) -> None:
        await self.driver.undefine(domain)

    async def start(self, domain: str) -> None:
        await self.driver.start(domain)

    async def destroy(self, domain: str) -> None:
        await self.driver.destroy(domain)

    async def shutdown(self, domain: str) -> None:
        await self.driver.shutdown(domain)

    async def reboot(self, domain: str) -> None:
        await self.driver.reboot(domain)

    async def managedsave(self, domain: str) -> None:
        await self.driver.managedsave(domain)

    async def save(self, domain: str, path: Path) -> None:
        await self.driver.save(domain, path)

    async def restore(self, path: Path) -> str:
        return await self.driver.restore(path)

    async def attach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        await self.driver.attach_device(domain, xml, AttachFlags(**flags), source=source)

    async def detach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        await self.driver.detach_device(domain, xml, AttachFlags(**flags), source=source)

    async def daemon_restart(self) -> None:
        await self.driver.close()
        self.host.driver = None
        self.host.driver = await self.machine._open(self.host)

    async def migrate(self, domain: str, dest: _Operations, options: dict[str, bool]) -> None:
        await self.driver.migrate(
            domain,
            dest.driver,
            live=options.get("live", False),
            p2p=options.get("p2p", False),
            persistent=options.get("persistent", False),
            undefinesource=options.get("undefinesource", False),
        )


def _flag_words(text: str) -> dict[str, bool]:
    words = set(text.split())
    return {f: f"--{f}" in words for f in ("live", "config", "current", "persistent")}


def _suffix(flags: str) -> str:
    return f" {flags}" if flags else ""


def _slots_in_use(*doms: Domain | None) -> list[int]:
    used = {
        d.address.slot
        for dom in doms
        if dom is not None
        for d in dom.devices()
        if d.address is not None
    }
    return sorted(used)


class BdfMachine(RuleBasedStateMachine):
    """Random sequences over one domain; subclass per profile with :func:`machine_class`."""

    profile: ClassVar[str] = "v53"
    #: when the simulated guest ejects removed devices: ``immediate`` or ``never`` (then
    #: every live detach times out after ``detach_timeout``: a late eject)
    eject: ClassVar[str] = "immediate"
    other_devices: ClassVar[dict[str, str]] = OTHER_DEVICES
    detach_timeout: ClassVar[float] = 0.02
    #: also take the paths of :data:`KNOWN_DESYNCS` (False steers around them)
    #: names of :data:`KNOWN_DESYNCS` the rules steer around (empty: explore everything)
    avoid: ClassVar[frozenset[str]] = frozenset()
    #: the daemons of a run; two (``src``, ``dst``) add migration and a host switch
    host_names: ClassVar[tuple[str, ...]] = ("host",)
    #: validate every CHV exchange against the OpenAPI spec (about half the run time)
    check_spec: ClassVar[bool] = False
    #: shared across examples of a run: one event loop, a step counter, the last failure
    loop: ClassVar[asyncio.AbstractEventLoop | None] = None
    steps_run: ClassVar[int] = 0
    last_failure: ClassVar[Trace | None] = None
    #: work directories of machines not torn down yet (removed by an interrupted soak)
    live_workdirs: ClassVar[set[Path]] = set()

    def __init__(self) -> None:
        super().__init__()
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.workdir = Path(tempfile.mkdtemp(prefix="bdf-machine-", dir=base))
        BdfMachine.live_workdirs.add(self.workdir)
        self.trace = Trace(self.profile, self.eject, hosts=list(self.host_names))
        self.trace.documents["domain"] = DOMAIN_XML
        self.hosts: dict[str, _Host] = {}
        for name in self.host_names:
            host = _Host(
                name, self.workdir / name, InProcessLauncher(self.profile, eject=self.eject)
            )
            host.scratch.mkdir(parents=True)
            self.hosts[name] = host
            host.driver = self._run(self._open(host))
        #: the host the rules act on (migration moves it to the destination)
        self.cur = self.host_names[0]
        self._infos: dict[tuple[str, str], dict[str, Any] | None] = {}

    # -- the current host ------------------------------------------------------------
    @property
    def h(self) -> _Host:
        return self.hosts[self.cur]

    @property
    def driver(self) -> Driver:
        driver = self.h.driver
        assert driver is not None
        return driver

    @property
    def scratch(self) -> Path:
        return self.h.scratch

    @property
    def saved(self) -> dict[str, tuple[dict[Any, Any], dict[Any, Any]]]:
        return self.h.saved

    @property
    def stopped(self) -> dict[Any, Any] | None:
        return self.h.stopped

    @stopped.setter
    def stopped(self, value: dict[Any, Any] | None) -> None:
        self.h.stopped = value

    @property
    def pending_eject(self) -> bool:
        return self.h.pending_eject

    @pending_eject.setter
    def pending_eject(self, value: bool) -> None:
        self.h.pending_eject = value

    @property
    def multi(self) -> bool:
        return len(self.host_names) > 1

    # -- plumbing ------------------------------------------------------------------
    @classmethod
    def _loop(cls) -> asyncio.AbstractEventLoop:
        if BdfMachine.loop is None or BdfMachine.loop.is_closed():
            BdfMachine.loop = asyncio.new_event_loop()
        return BdfMachine.loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop().run_until_complete(coro)

    async def _open(self, host: _Host) -> Driver:
        return await Driver.open(
            host.root / "state",
            host.launcher,
            detach_timeout=self.detach_timeout,
            check_spec=self.check_spec,
        )

    def teardown(self) -> None:
        async def down() -> None:
            for host in self.hosts.values():
                if host.driver is None:
                    continue
                for rec in list(host.driver.domains.values()):
                    if rec.hypervisor is not None:
                        await host.launcher.terminate(rec.hypervisor)
                await host.driver.close()

        try:
            self._run(down())
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            BdfMachine.live_workdirs.discard(self.workdir)

    # -- state queries for preconditions -------------------------------------------
    @property
    def rec_exists(self) -> bool:
        return DOMAIN in self.driver.domains

    @property
    def defined(self) -> bool:
        rec = self.driver.domains.get(DOMAIN)
        return rec is not None and rec.persistent is not None

    @property
    def active(self) -> bool:
        rec = self.driver.domains.get(DOMAIN)
        return rec is not None and rec.live is not None

    @property
    def inactive_defined(self) -> bool:
        return self.defined and not self.active

    def _doms(self) -> tuple[Domain | None, Domain | None]:
        rec = self.driver.domains.get(DOMAIN)
        if rec is None:
            return None, None
        return rec.live, rec.persistent

    async def _info(self, name: str, host: str | None = None) -> dict[str, Any] | None:
        """CHV's ``vm.info`` for a domain, cached until the next step changes anything."""
        host = host or self.cur
        if (host, name) not in self._infos:
            driver = self.hosts[host].driver
            assert driver is not None
            self._infos[(host, name)] = await driver.chv_info(name)
        return self._infos[(host, name)]

    async def _snap(self) -> dict[str, Snapshot]:
        """Every host's domains, as a refused step must leave them (checks.snapshot)."""
        out = {}
        for host in self.hosts.values():
            assert host.driver is not None
            views = {}
            for name in host.driver.domains:
                info = await self._info(name, host.name)
                views[name] = domain_view(host.driver, name, info)
            out[host.name] = snapshot_of(views, full=True)
        return out

    async def _chv_addresses(self) -> dict[Any, Any]:
        info = await self._info(DOMAIN) if self.active else None
        if info is None:
            return {}
        return {("chv", cid): (f"CHV device {cid}", bdf) for cid, bdf in chv_bdfs(info).items()}

    def _live_addresses(self) -> dict[Any, Any]:
        return addresses(self._doms()[0])

    def _fail(self, violations: list[Violation]) -> None:
        step = self.trace.steps[-1].text if self.trace.steps else "(start)"
        exc = InvariantFailure(step, violations)
        self._record_failure(str(exc), exc.rules)
        raise exc

    def _record_failure(self, message: str, rules: list[str]) -> None:
        self.trace.failure = message
        self.trace.rules = rules
        self.trace.failed_step = len(self.trace.steps) - 1 if self.trace.steps else None
        type(self).last_failure = self.trace

    # -- executing one step ---------------------------------------------------------
    def _step(self, text: str, op: Callable[[], Awaitable[object]]) -> bool:
        """Run one recorded step; True if it succeeded. A refusal must change nothing."""
        BdfMachine.steps_run += 1
        host = self.cur if self.cur != self.host_names[0] else ""

        async def go() -> bool:
            before = await self._snap()
            self._infos.clear()
            try:
                await op()
            except (DriverError, VirshError, OperationFailed) as exc:
                step = TraceStep("fail", text, error=str(exc), host=host)
                self.trace.steps.append(step)
                after = await self._snap()
                changed = [
                    v
                    for name in self.hosts
                    for v in changed_after_failure(before[name], after[name], name)
                ]
                if "timed out" in str(exc):
                    self.pending_eject = True
                if changed and _timed_out_detach(str(exc), changed):
                    # rule H4: CHV dropped the device from its config and the guest has
                    # not ejected it yet; that one change is expected
                    step.violations = ("changed-after-failure",)
                elif changed:
                    self._fail(changed)
                return False
            except BaseException:
                self.trace.steps.append(TraceStep("run", text, host=host))
                raise
            finally:
                self._infos.clear()
            self.trace.steps.append(TraceStep("run", text, host=host))
            return True

        try:
            return self._run(go())
        except InvariantFailure:
            raise
        except Exception as exc:
            self._record_failure(f"after `{text}`: {type(exc).__name__}: {exc}", ["error"])
            raise

    def _command(self, text: str) -> bool:
        """A step given as a virsh-like command line, executed as the scenario runner does."""
        cmd = parse_command(text)
        ok = self._step(text, lambda: self._execute(cmd))
        if not self.active:
            self.pending_eject = False
        if ok and cmd.name.startswith("detach") and not self.active:
            self.stopped = None  # a re-attach may legitimately take another slot
        return ok

    async def _execute(self, cmd: Command) -> None:
        """Run a command with the scenario runner's interpreter (harness.scenario.interpret)."""
        await execute(self._context(), cmd, self.cur)

    def _context(self) -> Context:
        def definitions(host: str, domain: str) -> tuple[Domain | None, Domain | None] | None:
            driver = self.hosts[host].driver
            rec = driver.domains.get(domain) if driver is not None else None
            return None if rec is None else (rec.live, rec.persistent)

        def document(ref: str) -> Document:
            return Document(ref, self.trace.documents[ref])

        ops = {name: _Operations(self, host) for name, host in self.hosts.items()}
        return Context(ops, document, definitions)

    def _address(self, kind: str, slot: int) -> str | None:
        """An explicit ``pci:D.B.S.F`` of the given kind, or None."""
        if kind == "none":
            return None
        if kind == "slot":
            return f"pci:0.0.{slot:02x}.0"
        if kind == "taken":
            used = _slots_in_use(*self._doms())
            pick = used[slot % len(used)] if used else slot
            return f"pci:0.0.{pick:02x}.0"
        if kind == "out-of-range":
            return f"pci:0.0.{32 + slot % 8:02x}.0"
        if kind == "slot-zero":
            return "pci:0.0.00.0"
        if kind == "function":
            return f"pci:0.0.{slot:02x}.{1 + slot % 7}"
        return f"pci:1.0.{slot:02x}.0"  # a segment the domain does not have

    def _moved(self, before: dict[Any, Any], after: dict[Any, Any], side: str, event: str) -> None:
        found = check_unchanged(before, after, side=side, event=event)
        if found:
            self._fail(found)

    # -- rules: definitions ----------------------------------------------------------
    @initialize()
    def begin(self) -> None:
        self.trace.steps.clear()

    @precondition(lambda self: not self.defined)
    @rule()
    def define(self) -> None:
        self._command("define domain")

    @precondition(lambda self: not self.rec_exists)
    @rule()
    def create(self) -> None:
        self._command("create domain")

    @precondition(lambda self: self.defined)
    @rule()
    def undefine(self) -> None:
        if self._command(f"undefine {DOMAIN}") and not self.rec_exists:
            self.stopped = None

    # -- rules: life cycle -----------------------------------------------------------
    def _restorable(self, image: str) -> bool:
        if "restore-conflict" not in self.avoid or image not in self.saved:
            return True
        return not restore_conflicts(self.saved[image][0], self._doms()[1])

    @precondition(lambda self: self.inactive_defined)
    @rule()
    def start(self) -> None:
        managed = self.driver.state.managed_save_path(DOMAIN).exists()
        if managed and not self._restorable("managed"):
            return
        if not self._command(f"start {DOMAIN}"):
            return
        if managed and "managed" in self.saved:
            live, chv = self.saved.pop("managed")
            self._moved(live, self._live_addresses(), "live", "managedsave/start")
            self._moved(chv, self._run(self._chv_addresses()), "chv", "managedsave/start")
        elif not managed and self.stopped is not None:
            self._moved(self.stopped, self._live_addresses(), "live", "destroy+start")
        self.stopped = None

    @precondition(lambda self: self.active)
    @rule(how=st.sampled_from(["destroy", "shutdown"]))
    def stop(self, how: str) -> None:
        live, pers = self._doms()
        snapshot = (
            {k: v for k, v in addresses(live).items() if pers and pers.find(k) is not None}
            if live is not None and pers is not None
            else None
        )
        if self._command(f"{how} {DOMAIN}"):
            self.stopped = snapshot

    def _steer_pending(self, desync: str) -> bool:
        """Active, and not steering around ``desync`` (a pending-eject one)."""
        return self.active and (desync not in self.avoid or not self.pending_eject)

    @precondition(lambda self: self._steer_pending("pending-eject-rebuild"))
    @rule()
    def reboot(self) -> None:
        live = self._live_addresses()
        chv = self._run(self._chv_addresses())
        if self._command(f"reboot {DOMAIN}"):
            self._moved(live, self._live_addresses(), "live", f"reboot of {DOMAIN}")
            self._moved(chv, self._run(self._chv_addresses()), "chv", f"reboot of {DOMAIN}")

    @precondition(lambda self: self.rec_exists)  # a restart with no domain is uninteresting
    @rule()
    def daemon_restart(self) -> None:
        live, pers = self._doms()
        before = (addresses(live), addresses(pers), self._run(self._chv_addresses()))
        if self._command("daemon-restart"):
            live2, pers2 = self._doms()
            self._moved(before[0], addresses(live2), "live", "daemon-restart")
            self._moved(before[1], addresses(pers2), "persistent", "daemon-restart")
            self._moved(before[2], self._run(self._chv_addresses()), "chv", "daemon-restart")

    @precondition(lambda self: self._steer_pending("pending-eject-restore"))
    @rule(image=st.sampled_from(SAVE_IMAGES))
    def save(self, image: str) -> None:
        before = (self._live_addresses(), self._run(self._chv_addresses()))
        if self._command(f"save {DOMAIN} {image}"):
            self.saved[image] = before
            self.stopped = None

    @precondition(lambda self: any((self.scratch / i).exists() for i in SAVE_IMAGES))
    @rule(image=st.sampled_from(SAVE_IMAGES))
    def restore(self, image: str) -> None:
        if not (self.scratch / image).exists() or not self._restorable(image):
            return
        if self._command(f"restore {image}") and image in self.saved:
            live, chv = self.saved[image]
            self._moved(live, self._live_addresses(), "live", "save/restore")
            self._moved(chv, self._run(self._chv_addresses()), "chv", "save/restore")

    @precondition(lambda self: self._steer_pending("pending-eject-restore"))
    @rule()
    def managedsave(self) -> None:
        before = (self._live_addresses(), self._run(self._chv_addresses()))
        if self._command(f"managedsave {DOMAIN}"):
            self.saved["managed"] = before
            self.stopped = None

    # -- rules: devices --------------------------------------------------------------
    @precondition(lambda self: self.rec_exists)
    @rule(
        disk=st.sampled_from(DISK_TARGETS),
        flags=st.sampled_from(FLAG_SETS),
        address=st.sampled_from(ADDRESS_KINDS),
        slot=st.integers(1, 31),
    )
    def attach_disk(self, disk: str, flags: str, address: str, slot: int) -> None:
        addr = self._address(address, slot)
        if not self._twin_ok(("disk", disk), addr):
            return
        text = f"attach-disk {DOMAIN} --target {disk} --source /nfs/{disk}.img"
        text += " --targetbus virtio --subdriver raw"
        if addr is not None:
            text += f" --address {addr}"
        self._command(text + _suffix(flags))

    def _unpinnable(self, xml: str) -> bool:
        """A device this release can neither place nor report (its slot is predicted)."""
        caps = self.driver.caps
        return bool(caps.device_id_kinds) and not caps.can_address(chv_kind(Device.from_xml(xml)))

    def _unpinnable_device(self, device: Device) -> bool:
        caps = self.driver.caps
        return bool(caps.device_id_kinds) and not caps.can_address(chv_kind(device))

    def _steer_unpinnable(self, flags: str) -> bool:
        """True if a detach now would take "unaddressable-prediction" or
        "unpinnable-repredict" (config side) or "unpinnable-reboot" (live side)."""
        live, pers = self._doms()
        affects_live, affects_config = AttachFlags(**_flag_words(flags)).resolve(self.active)

        def holds(dom: Domain | None) -> bool:
            return dom is not None and any(self._unpinnable_device(d) for d in dom.devices())

        if "unaddressable-prediction" in self.avoid and affects_config and holds(pers):
            return True
        if "unpinnable-repredict" in self.avoid and affects_config and holds(pers):
            if self.active or self.driver.state.save_images(DOMAIN):
                return True
        return "unpinnable-reboot" in self.avoid and affects_live and holds(live)

    def _twin_ok(self, key: tuple[str, str], addr: str | None) -> bool:
        """False if steering around "explicit-vs-twin" and this attach would take it."""
        if "explicit-vs-twin" not in self.avoid or addr is None:
            return True
        for dom in self._doms():
            twin = dom.find(key) if dom is not None else None
            if twin is not None and twin.address is not None:
                return False
        return True

    def _present(self, tag: str) -> list[Device]:
        """Devices of a class in either definition (one per key), in key order."""
        found: dict[Any, Device] = {}
        for dom in self._doms():
            if dom is not None:
                for d in dom.devices():
                    if d.tag == tag:
                        found.setdefault(d.key, d)
        return [found[k] for k in sorted(found)]

    @precondition(lambda self: self.rec_exists)
    @rule(
        disk=st.sampled_from(DISK_TARGETS),
        flags=st.sampled_from(FLAG_SETS),
        present=st.booleans(),
        pick=st.integers(0, 7),
    )
    def detach_disk(self, disk: str, flags: str, present: bool, pick: int) -> None:
        if self._steer_unpinnable(flags):
            return
        disks = [d.target_dev for d in self._present("disk") if d.target_dev]
        if present and disks:
            disk = disks[pick % len(disks)]
        self._command(f"detach-disk {DOMAIN} {disk}{_suffix(flags)}")

    @precondition(lambda self: self.rec_exists)
    @rule(
        mac=st.sampled_from(NIC_MACS),
        flags=st.sampled_from(FLAG_SETS),
        address=st.sampled_from(ADDRESS_KINDS),
        slot=st.integers(1, 31),
    )
    def attach_interface(self, mac: str, flags: str, address: str, slot: int) -> None:
        addr = self._address(address, slot)
        if not self._twin_ok(("interface", mac), addr):
            return
        if addr is None:
            self._command(
                f"attach-interface {DOMAIN} --type bridge --source br0 --mac {mac} "
                f"--model virtio{_suffix(flags)}"
            )
            return
        # virsh attach-interface has no --address: an XML document instead
        d, b, s, f = addr.removeprefix("pci:").split(".")
        doc = f"nic-{mac[-2:]}-at-{d}-{s}-{f}"
        self.trace.documents[doc] = (
            "<interface type='bridge'>\n"
            "  <source bridge='br0'/>\n"
            f"  <mac address='{mac}'/>\n"
            "  <model type='virtio'/>\n"
            f"  <address type='pci' domain='0x{int(d, 16):04x}' bus='0x{int(b, 16):02x}' "
            f"slot='0x{int(s, 16):02x}' function='0x{int(f, 16):x}'/>\n"
            "</interface>\n"
        )
        self._command(f"attach-device {DOMAIN} {doc}{_suffix(flags)}")

    @precondition(lambda self: self.rec_exists)
    @rule(
        mac=st.sampled_from(NIC_MACS),
        flags=st.sampled_from(FLAG_SETS),
        present=st.booleans(),
        pick=st.integers(0, 7),
    )
    def detach_interface(self, mac: str, flags: str, present: bool, pick: int) -> None:
        if self._steer_unpinnable(flags):
            return
        kind = "bridge"
        nics = [(d.element.get("type") or "", d.mac) for d in self._present("interface") if d.mac]
        if present and nics:
            kind, mac = nics[pick % len(nics)]
        self._command(f"detach-interface {DOMAIN} --type {kind} --mac {mac}{_suffix(flags)}")

    @precondition(lambda self: self.rec_exists and bool(self.other_devices))
    @rule(data=st.data(), flags=st.sampled_from(FLAG_SETS), detach=st.booleans())
    def other_device(self, data: st.DataObject, flags: str, detach: bool) -> None:
        doc = data.draw(st.sampled_from(sorted(self.other_devices)), label="document")
        xml = self.other_devices[doc]
        if not detach and self._unpinnable(xml):
            if {"config-unaddressable", "unaddressable-vs-saved"} & self.avoid:
                return
            pers = self._doms()[1]
            if "unpinnable-order" in self.avoid and pers is not None:
                if any(self._unpinnable_device(d) for d in pers.devices()):
                    return
        if detach and self._steer_unpinnable(flags):
            return
        self.trace.documents[doc] = self.other_devices[doc]
        verb = "detach-device" if detach else "attach-device"
        self._command(f"{verb} {DOMAIN} {doc}{_suffix(flags)}")

    # -- rules: two hosts ------------------------------------------------------------
    @property
    def other(self) -> str:
        return next(h for h in self.host_names if h != self.cur)

    @precondition(lambda self: self.multi)
    @rule()
    def switch_host(self) -> None:
        """Later steps act on the other daemon (nothing runs: no step is recorded)."""
        self.cur = self.other

    @precondition(
        lambda self: (
            self.multi
            and self.active
            and ("pending-eject-migrate" not in self.avoid or not self.pending_eject)
        )
    )
    @rule(flags=st.sampled_from(MIGRATE_FLAGS))
    def migrate(self, flags: str) -> None:
        source, dest = self.cur, self.other
        before = (self._live_addresses(), self._run(self._chv_addresses()))
        pending = self.pending_eject
        if not self._command(f"migrate {DOMAIN} --desturi {dest} {flags}"):
            return
        self.cur = dest
        self.pending_eject = pending
        self._moved(before[0], self._live_addresses(), "live", f"migration {source} -> {dest}")
        self._moved(
            before[1], self._run(self._chv_addresses()), "chv", f"migration {source} -> {dest}"
        )

    # -- rules: faults ---------------------------------------------------------------
    @precondition(lambda self: self.active)
    @rule(
        endpoint=st.sampled_from(["vm.add-disk", "vm.add-net"]),
        flags=st.sampled_from(["", "--live", "--persistent"]),
        index=st.integers(0, 2),
    )
    def faulted_attach(self, endpoint: str, flags: str, index: int) -> None:
        rule_ = {"endpoint": endpoint, "count": 1}
        self._step(f"fault {endpoint}", lambda: self._inject(rule_))
        host = self.trace.steps[-1].host
        self.trace.steps[-1] = TraceStep("fault", f"fault {endpoint}", fault=rule_, host=host)
        if endpoint == "vm.add-disk":
            target = DISK_TARGETS[index]
            self._command(
                f"attach-disk {DOMAIN} --target {target} --source /nfs/{target}.img "
                f"--targetbus virtio --subdriver raw{_suffix(flags)}"
            )
        else:
            self._command(
                f"attach-interface {DOMAIN} --type bridge --source br0 --mac {NIC_MACS[index]} "
                f"--model virtio{_suffix(flags)}"
            )

    async def _inject(self, fault: dict[str, Any]) -> None:
        self._infos.clear()
        await self._control(DOMAIN, "faults", [fault])

    async def _control(self, name: str, what: str, body: object) -> None:
        from fakechv.wire import ApiRequest

        rec = self.driver.domains[name]
        assert rec.hypervisor is not None
        resp = await rec.hypervisor.transport.send(
            ApiRequest("PUT", f"/fakechv/v1/{what}", json.dumps(body).encode())
        )
        if resp.status >= 400:
            raise HarnessError(f"fakechv refused {what} {body}: {resp.body!r}")

    # -- invariants ------------------------------------------------------------------
    @invariant()
    def in_sync(self) -> None:
        found: list[Violation] = []
        for host in self.hosts.values():
            assert host.driver is not None
            for name in list(host.driver.domains):
                found += self._run(self._check(host.name, name))
        if found:
            self._fail(found)

    async def _check(self, host: str, name: str) -> list[Violation]:
        """``harness.driver.selfcheck.check_domain``, reading ``vm.info`` through the step
        cache."""
        driver = self.hosts[host].driver
        assert driver is not None
        info = await self._info(name, host) if driver.domains[name].live is not None else None
        rec = driver.domains[name]
        return check_definitions(rec.persistent, rec.live, info, driver.caps)


def restore_conflicts(saved_live: dict[Any, Any], persistent: Domain | None) -> bool:
    """True if a save image's live addresses and the persistent definition disagree.

    Restoring such an image gives a device one address in the live definition and
    another in the persistent one: the reference driver neither refuses the restore nor
    keeps the image's slots out of later config-only allocations.
    """
    if persistent is None:
        return False
    now = addresses(persistent)
    return any(key in now and now[key][1] != bdf for key, (_label, bdf) in saved_live.items())


def _timed_out_detach(error: str, changed: list[Violation]) -> bool:
    return "timed out" in error and all(v.side == "chv" for v in changed)


# --------------------------------------------------------------------------- running
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
) -> type[BdfMachine]:
    """A :class:`BdfMachine` subclass for one CHV profile (``v51`` ... ``head``).

    ``eject="never"``: the simulated guest never ejects (live detaches time out).
    ``other_devices``: the documents of the other-classes rule (default
    :data:`OTHER_DEVICES`). ``avoid``: names of :data:`KNOWN_DESYNCS` to steer around;
    without it, ``known_desyncs=False`` avoids all of them and True (default) none.
    ``migration``: two daemons (``src``, ``dst``) with migrate and host-switch rules.
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
    }
    name = f"BdfMachine_{profile.replace('-', '_')}_{eject}" + ("_migration" if migration else "")
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
    start_steps = BdfMachine.steps_run
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        run_state_machine_as_test(machine, settings=settings_)
    except Exception as exc:
        error = exc
    seconds = time.perf_counter() - started
    result = MachineRun(machine.profile, BdfMachine.steps_run - start_steps, seconds)
    if error is not None:
        result.error = error
        result.failure = machine.last_failure or Trace(
            machine.profile, failure=f"{type(error).__name__}: {error}", rules=["error"]
        )
        if report_dir is not None and result.failure.steps:
            result.reproducer = write_reproducer(result.failure, Path(report_dir))
    return result


def close_loop() -> None:
    """Close the shared event loop (end of a run)."""
    loop, BdfMachine.loop = BdfMachine.loop, None
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
