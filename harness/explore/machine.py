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
``docs/scenario-format.md``, or a ``fault:``) in a :class:`~harness.explore.trace.Trace`,
so a failing run can be written out as a scenario file by :mod:`harness.explore.reproducer`
and replayed with the scenario runner.

:mod:`harness.explore.run` makes a machine class for a CHV profile (``machine_class``)
and runs it under hypothesis settings, exporting the shrunk failure (``run_machine``);
:mod:`harness.explore.vocabulary` holds what the rules draw from.
"""

import asyncio
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from fakechv.control import Control, ControlError
from harness.checks.invariants import (
    Violation,
    addresses,
    check_definitions,
    check_unchanged,
)
from harness.checks.snapshot import Snapshot, changed_after_failure, snapshot_of
from harness.chv.info import chv_bdfs
from harness.driver.daemon import Driver
from harness.driver.launcher import InProcessLauncher
from harness.driver.records import AttachFlags, DriverError
from harness.driver.selfcheck import domain_view
from harness.errors import HarnessError
from harness.explore.hosts import MachineHost, machine_context
from harness.explore.oracles import command_violations, mark_step
from harness.explore.steps import (
    explicit_address,
    flag_words,
    restore_conflicts,
    suffix,
    timed_out_detach,
    unpinnable,
)
from harness.explore.trace import InvariantFailure, Trace, TraceStep
from harness.explore.vocabulary import (
    ADDRESS_KINDS,
    DISK_TARGETS,
    DOMAIN,
    DOMAIN_XML,
    FLAG_SETS,
    MIGRATE_FLAGS,
    NIC_MACS,
    OTHER_DEVICES,
    SAVE_IMAGES,
    large_domain_xml,
)
from harness.model.domain import Device, Domain
from harness.model.virsh import Command, VirshError, parse_command
from harness.scenario.interpret import Context, execute
from harness.targets.base import OperationFailed

__all__ = ["BdfMachine"]

T = TypeVar("T")


class BdfMachine(RuleBasedStateMachine):
    """Random sequences over one domain; subclass per profile with
    :func:`harness.explore.run.machine_class`."""

    profile: ClassVar[str] = "v53"
    #: when the simulated guest ejects removed devices: ``immediate`` or ``never`` (then
    #: every live detach times out after ``detach_timeout``: a late eject)
    eject: ClassVar[str] = "immediate"
    other_devices: ClassVar[dict[str, str]] = OTHER_DEVICES
    detach_timeout: ClassVar[float] = 0.02
    #: names of :data:`KNOWN_DESYNCS` the rules steer around (empty: explore everything)
    avoid: ClassVar[frozenset[str]] = frozenset()
    #: the daemons of a run; two (``src``, ``dst``) add migration and a host switch
    host_names: ClassVar[tuple[str, ...]] = ("host",)
    #: validate every CHV exchange against the OpenAPI spec (about half the run time)
    check_spec: ClassVar[bool] = False
    #: the driver's deliberate deviations (:mod:`harness.driver.quirks`): a driver under
    #: test, which the invariants must catch
    quirks: ClassVar[frozenset[str]] = frozenset()
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
        self.hosts: dict[str, MachineHost] = {}
        for name in self.host_names:
            host = MachineHost(
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
    def h(self) -> MachineHost:
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

    async def _open(self, host: MachineHost) -> Driver:
        return await Driver.open(
            host.root / "state",
            host.launcher,
            detach_timeout=self.detach_timeout,
            check_spec=self.check_spec,
            quirks=self.quirks,
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
                if changed and timed_out_detach(str(exc), changed):
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
        before, active, rec = self._doms(), self.active, self.driver.domains.get(DOMAIN)
        ok = self._step(text, lambda: self._execute(cmd))
        error = (self.trace.steps[-1].error or "") if self.trace.steps else ""
        found = command_violations(
            cmd, ok=ok, error=error, before=before, after=self._doms(), active=active,
            # read from disk only when an attach is judged (an attach saves no image)
            saved=lambda: self.driver._saved_images(rec) if rec is not None else [],
            can_address=self.caps_ok,
        )  # fmt: skip
        if found:
            mark_step(self.trace.steps[-1], found)
            self._fail(found)
        if not self.active:
            self.pending_eject = False
        if ok and cmd.name.startswith("detach") and not self.active:
            self.stopped = None  # a re-attach may legitimately take another slot
        return ok

    def caps_ok(self, kind: str) -> bool:
        return bool(self.driver.caps.can_address(kind))

    async def _execute(self, cmd: Command) -> None:
        """Run a command with the scenario runner's interpreter (harness.scenario.interpret)."""
        await execute(self._context(), cmd, self.cur)

    def _context(self) -> Context:
        return machine_context(self.hosts, self.trace.documents, self._open)

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

    @precondition(lambda self: not self.defined)
    @rule(extra=st.integers(8, 12))
    def define_large(self, extra: int) -> None:
        doc = f"domain-plus-{extra}-disks"  # more than 10 devices without an address
        self.trace.documents[doc] = large_domain_xml(extra)
        self._command(f"define {doc}")

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
        addr = explicit_address(address, slot, self._doms())
        if not self._twin_ok(("disk", disk), addr):
            return
        text = f"attach-disk {DOMAIN} --target {disk} --source /nfs/{disk}.img"
        text += " --targetbus virtio --subdriver raw"
        if addr is not None:
            text += f" --address {addr}"
        self._command(text + suffix(flags))

    def _unpinnable(self, xml: str) -> bool:
        """A device this release can neither place nor report (its slot is predicted)."""
        return unpinnable(Device.from_xml(xml), self.driver.caps)

    def _unpinnable_device(self, device: Device) -> bool:
        return unpinnable(device, self.driver.caps)

    def _steer_unpinnable(self, flags: str) -> bool:
        """True if a detach now would take "unaddressable-prediction" or
        "unpinnable-repredict" (config side) or "unpinnable-reboot" (live side)."""
        live, pers = self._doms()
        affects_live, affects_config = AttachFlags(**flag_words(flags)).resolve(self.active)

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
        self._command(f"detach-disk {DOMAIN} {disk}{suffix(flags)}")

    @precondition(lambda self: self.rec_exists)
    @rule(
        mac=st.sampled_from(NIC_MACS),
        flags=st.sampled_from(FLAG_SETS),
        address=st.sampled_from(ADDRESS_KINDS),
        slot=st.integers(1, 31),
    )
    def attach_interface(self, mac: str, flags: str, address: str, slot: int) -> None:
        addr = explicit_address(address, slot, self._doms())
        if not self._twin_ok(("interface", mac), addr):
            return
        if addr is None:
            self._command(
                f"attach-interface {DOMAIN} --type bridge --source br0 --mac {mac} "
                f"--model virtio{suffix(flags)}"
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
        self._command(f"attach-device {DOMAIN} {doc}{suffix(flags)}")

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
        self._command(f"detach-interface {DOMAIN} --type {kind} --mac {mac}{suffix(flags)}")

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
        self._command(f"{verb} {DOMAIN} {doc}{suffix(flags)}")

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
                f"--targetbus virtio --subdriver raw{suffix(flags)}"
            )
        else:
            self._command(
                f"attach-interface {DOMAIN} --type bridge --source br0 --mac {NIC_MACS[index]} "
                f"--model virtio{suffix(flags)}"
            )

    async def _inject(self, fault: dict[str, Any]) -> None:
        self._infos.clear()
        rec = self.driver.domains[DOMAIN]
        assert rec.hypervisor is not None
        try:
            await Control(rec.hypervisor.transport.send).add_faults([fault])
        except ControlError as exc:
            raise HarnessError(f"fakechv refused fault {fault}: {exc}") from None

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
