"""The reference libvirt-side driver for Cloud Hypervisor.

It does what libvirt's CH driver does for a domain's life (define, start,
hotplug, detach, destroy, save/restore, daemon restart) and gets PCI addresses
right: every device CHV creates as a PCI device carries an address in the
definition it belongs to, the address is sent to CHV (``pci_segment`` +
``pci_device_id``), the persistent and live definitions never hand out each
other's slots, and a failed operation changes nothing. The rules are stated in
``docs/semantics.md``; :mod:`harness.driver.allocator` holds the slot choices and this
module the order of operations around them.

A :class:`Driver` is one daemon. Its state lives in a :class:`StateDir`; its
hypervisors come from a :class:`~harness.driver.launcher.Launcher` and survive the
driver object, so ``await driver.close()`` followed by ``Driver.open`` on the
same root is a daemon restart.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from harness.chv.capabilities import HOTPLUG_KINDS, ChvCapabilities, capabilities
from harness.chv.client import ChvClient, ChvError, Exchange
from harness.chv.info import chv_bdfs, device_tree
from harness.chv.translate import (
    chv_id,
    chv_kind,
    device_body,
    vm_config,
)
from harness.driver import migration, saverestore
from harness.driver import quirks as quirks_mod
from harness.driver.allocator import SlotMap, assign_at_define, choose_hotplug_address
from harness.driver.launcher import Hypervisor, Launcher
from harness.driver.records import AttachFlags, DomainRecord, DriverError
from harness.driver.saverestore import SAVE_XML
from harness.driver.statedir import Runtime, StateDir
from harness.errors import HarnessError
from harness.model.address import PciAddress
from harness.model.domain import Device, DeviceClass, Domain, generate_alias

__all__ = ["Driver"]

#: CHV's creation order of the devices it places itself (device_manager.rs)
_UNPINNED_ORDER = {"balloon": 0, "watchdog": 1, "pvpanic": 2}


class Driver:
    """One reference daemon: a state directory plus a hypervisor launcher."""

    def __init__(
        self,
        root: Path,
        launcher: Launcher,
        *,
        segments: int = 1,
        detach_timeout: float = 5.0,
        check_spec: bool = True,
        observer: Callable[[str, Exchange], None] | None = None,
        quirks: frozenset[str] = frozenset(),
    ) -> None:
        self.state = StateDir(Path(root))
        self.launcher = launcher
        self.segments = segments
        self.detach_timeout = detach_timeout
        self.check_spec = check_spec
        self.observer = observer
        #: deliberate deviations of a driver under test (:mod:`harness.driver.quirks`)
        self.quirks = quirks
        #: what a quirky driver keeps in memory only (lost at a daemon restart)
        self.fork = quirks_mod.ForkState()
        self.caps: ChvCapabilities = capabilities(launcher.profile)
        self.domains: dict[str, DomainRecord] = {}
        self._migrating: set[str] = set()

    @property
    def profile(self) -> str:
        return self.launcher.profile

    # -- daemon start / stop -------------------------------------------------
    @classmethod
    async def open(cls, root: Path, launcher: Launcher, **options: object) -> Driver:
        """Start a daemon on ``root``: load every definition, reconnect to hypervisors."""
        driver = cls(root, launcher, **options)  # type: ignore[arg-type]
        await driver._load()
        return driver

    async def _load(self) -> None:
        self.state.ensure()
        for name in self.state.persistent_names():
            self.domains[name] = DomainRecord(name, persistent=self.state.load_persistent(name))
        for name in self.state.live_names():
            live = self.state.load_live(name)
            runtime = self.state.load_runtime(name)
            hv = await self.launcher.reconnect(runtime.hypervisor) if runtime else None
            if live is None or runtime is None or hv is None:
                # the hypervisor is gone: the domain is shut off, as libvirt does
                self.state.remove_live(name)
                if runtime is not None and runtime.transient:
                    self.domains.pop(name, None)
                continue
            rec = self.domains.setdefault(name, DomainRecord(name))
            rec.live, rec.runtime = live, runtime
            self.fork.reattached.add(name)
            self._attach_hypervisor(rec, hv)

    async def close(self) -> None:
        """Stop the daemon; running hypervisors keep running."""
        for rec in self.domains.values():
            if rec.client is not None:
                await rec.client.close()
                rec.client = None
        self.domains.clear()

    def _attach_hypervisor(self, rec: DomainRecord, hv: Hypervisor) -> None:
        rec.hypervisor = hv
        rec.events = hv.events
        observer = self.observer

        def observe(exchange: Exchange) -> None:
            if observer is not None:
                observer(rec.name, exchange)

        rec.client = ChvClient(
            hv.transport,
            profile=self.profile if self.check_spec else None,
            strict=True,
            observer=observe,
            rewrite=(lambda ep, body: quirks_mod.rewrite_body(self.quirks, ep, body))
            if self.quirks
            else None,
        )

    # -- queries -------------------------------------------------------------
    def list_domains(self) -> dict[str, str]:
        return {name: rec.state for name, rec in sorted(self.domains.items())}

    def _get(self, name: str) -> DomainRecord:
        rec = self.domains.get(name)
        if rec is None:
            raise DriverError(f"failed to get domain '{name}': no domain with matching name")
        return rec

    def persistent(self, name: str) -> Domain | None:
        return self._get(name).persistent

    def live(self, name: str) -> Domain | None:
        return self._get(name).live

    def dumpxml(self, name: str, *, inactive: bool = False) -> str:
        rec = self._get(name)
        dom = rec.persistent if inactive or rec.live is None else rec.live
        if dom is None:
            raise DriverError(f"domain '{name}' has no persistent definition")
        return dom.to_xml()

    async def chv_info(self, name: str) -> dict[str, object] | None:
        """CHV's ``vm.info`` (after processing finished removals, see ``_reconcile``)."""
        rec = self._get(name)
        if rec.client is None:
            return None
        info = await self._reconcile(rec)
        return info if info is not None else await rec.client.info()

    def client(self, name: str) -> ChvClient:
        rec = self._get(name)
        if rec.client is None:
            raise DriverError(f"Requested operation is not valid: domain '{name}' is not running")
        return rec.client

    # -- define / undefine ---------------------------------------------------
    def _prepare(self, xml: str, source: str) -> Domain:
        """Parse and address a new definition (define and create)."""
        dom = Domain.from_xml(xml, source=source)
        dom.ensure_uuid()
        dom.ensure_implicit_rng()
        dom.assign_aliases()
        self._check_classes(dom)
        if self.caps.device_id_kinds:
            overrun = quirks_mod.check_queue(
                self.quirks,
                dom,
                lambda d: quirks_mod.addresses(self.quirks, chv_kind(d), d.element),
            )
            if overrun:
                raise DriverError(overrun)
            assign_at_define(
                dom,
                segments=self.segments,
                host_bridge_all_segments=self.caps.host_bridge_all_segments,
            )
            self._predict_unpinned(dom)
            quirks_mod.drop_addresses(self.quirks, dom, chv_kind)
        else:
            self._refuse_explicit(dom.devices())
        return dom

    def _predict_unpinned(self, dom: Domain) -> None:
        """Give the devices this release cannot pin the slots CHV will give them.

        At boot CHV reserves every pinned id first and then places the others at the
        lowest free slot, in its creation order (balloon, watchdog, then pvpanic): the
        definition records exactly that, so a hole opened below them (a config detach)
        moves them in the definition too, instead of leaving the definition wrong.
        """
        if not self.caps.device_id_kinds:
            return  # nothing is pinned: CHV places everything, the driver adopts (C2)
        unpinned = [d for d in dom.devices() if not self.caps.can_address(chv_kind(d))]
        if not unpinned:
            return
        slots = SlotMap.from_domains(dom)
        for device in unpinned:
            if device.address is not None:
                slots.release(device.address)
        for device in sorted(unpinned, key=lambda d: _UNPINNED_ORDER.get(chv_kind(d), 9)):
            address = slots.lowest_free(device.address.domain if device.address else 0)
            device.set_address(address)
            slots.reserve(address, device.label, device.key)

    def _check_classes(self, dom: Domain) -> None:
        for device in dom.devices():
            if device.cls is DeviceClass.SHMEM:
                raise DriverError(
                    f"{device.label}: ivshmem is not part of CHV's API spec; "
                    "the reference driver cannot create it"
                )

    def _refuse_explicit(self, devices: list[Device]) -> None:
        for device in devices:
            if device.address is not None:
                raise DriverError(
                    f"{device.label}: CHV {self.profile} cannot place a device at a chosen "
                    f"PCI address ({device.address}); it has no pci_device_id. Remove the "
                    "<address> and the driver will record where CHV puts it"
                )

    async def define(self, xml: str, *, source: str = "<string>") -> str:
        try:
            dom = self._prepare(xml, source)
        except HarnessError as exc:
            raise DriverError(str(exc)) from exc
        rec = self.domains.get(dom.name)
        if rec is not None and rec.persistent is not None and rec.persistent.uuid != dom.uuid:
            raise DriverError(f"domain '{dom.name}' already exists with uuid {rec.persistent.uuid}")
        self.state.save_persistent(dom)
        if rec is None:
            rec = self.domains[dom.name] = DomainRecord(dom.name)
        rec.persistent = dom
        return dom.name

    async def undefine(self, name: str) -> None:
        rec = self._get(name)
        if rec.persistent is None:
            raise DriverError("Requested operation is not valid: cannot undefine transient domain")
        if self.state.managed_save_path(name).exists():
            raise DriverError(
                "Requested operation is not valid: Refusing to undefine while domain managed "
                "save image exists"
            )
        self.state.remove_persistent(name)
        rec.persistent = None
        if rec.live is None:
            del self.domains[name]
        elif rec.runtime is not None:
            rec.runtime.transient = True
            self.state.save_live(rec.live, rec.runtime)

    # -- start / stop ----------------------------------------------------------
    async def create(self, xml: str, *, source: str = "<string>") -> str:
        """Start a transient domain from XML."""
        try:
            dom = self._prepare(xml, source)
        except HarnessError as exc:
            raise DriverError(str(exc)) from exc
        if dom.name in self.domains:
            raise DriverError(f"domain '{dom.name}' already exists")
        rec = DomainRecord(dom.name)
        self.domains[dom.name] = rec
        try:
            await self._boot(rec, dom, transient=True)
        except BaseException:
            del self.domains[dom.name]
            raise
        return dom.name

    async def start(self, name: str) -> None:
        rec = self._get(name)
        if rec.live is not None:
            raise DriverError(
                f"Requested operation is not valid: domain '{name}' is already active"
            )
        assert rec.persistent is not None
        managed = self.state.managed_save_path(name)
        if managed.exists():
            await saverestore.restore_from(self, managed, rec)
            shutil.rmtree(managed)
            return
        await self._boot(rec, rec.persistent.copy(), transient=False)

    async def _launch(self, rec: DomainRecord) -> ChvClient:
        try:
            hv = await self.launcher.launch(rec.name)
        except HarnessError as exc:
            raise DriverError(f"failed to start hypervisor for '{rec.name}': {exc}") from exc
        self._attach_hypervisor(rec, hv)
        assert rec.client is not None
        return rec.client

    async def _discard_hypervisor(self, rec: DomainRecord, *, ask: bool = True) -> None:
        if rec.hypervisor is not None:
            await self.launcher.terminate(rec.hypervisor, ask=ask)
        if rec.client is not None:
            await rec.client.close()
        rec.hypervisor = rec.client = None
        rec.events = []

    async def _boot(self, rec: DomainRecord, live: Domain, *, transient: bool) -> None:
        quirks_mod.boot_net_ids(self.quirks, live)
        client = await self._launch(rec)
        try:
            await client.create(vm_config(live, self.caps, segments=self.segments))
            await client.boot()
            if not self.caps.device_id_kinds:
                self._adopt(live, await client.info())
        except (ChvError, HarnessError) as exc:
            await self._discard_hypervisor(rec)
            raise DriverError(f"failed to start domain '{rec.name}': {exc}") from exc
        runtime = Runtime(
            hypervisor=rec.hypervisor.key if rec.hypervisor else "",
            profile=self.profile,
            transient=transient,
        )
        rec.live, rec.runtime = live, runtime
        self.state.save_live(live, runtime)

    def _adopt(self, live: Domain, info: dict[str, object]) -> None:
        """Record where CHV put each device (for releases that take no address)."""
        bdfs = chv_bdfs(info)
        for device in live.devices():
            bdf = bdfs.get(chv_id(device, self.caps))
            if bdf is not None:
                device.set_address(PciAddress.from_chv_bdf(bdf))

    async def _stop(self, rec: DomainRecord) -> None:
        self.fork.forget(rec.name)
        await self._discard_hypervisor(rec)
        self.state.remove_live(rec.name)
        rec.live = rec.runtime = None
        if rec.persistent is None:
            del self.domains[rec.name]

    async def destroy(self, name: str) -> None:
        rec = self._get(name)
        if rec.live is None:
            raise DriverError(f"Requested operation is not valid: domain '{name}' is not running")
        await self._stop(rec)

    async def shutdown(self, name: str) -> None:
        rec = self._get(name)
        client = self.client(name)
        try:
            await client.shutdown()
        except ChvError as exc:
            raise DriverError(f"failed to shut down '{name}': {exc}") from exc
        await self._stop(rec)

    async def reboot(self, name: str) -> None:
        client = self.client(name)
        try:
            await client.reboot()
        except ChvError as exc:
            raise DriverError(f"failed to reboot '{name}': {exc}") from exc
        await self._reconcile(self._get(name))

    # -- hotplug ---------------------------------------------------------------
    def _targets(self, rec: DomainRecord, flags: AttachFlags) -> tuple[bool, bool]:
        live, config = flags.resolve(rec.active)
        if live and not rec.active:
            raise DriverError(
                f"Requested operation is not valid: domain '{rec.name}' is not running"
            )
        if config and rec.persistent is None:
            raise DriverError(
                "Requested operation is not valid: cannot change persistent config of a "
                "transient domain"
            )
        return live, config

    def _unique_alias(self, rec: DomainRecord, device: Device) -> str:
        taken = {
            alias
            for dom in (rec.live, rec.persistent)
            if dom is not None
            for alias in dom.aliases()
        }
        return generate_alias(device, taken)

    def _saved_images(self, rec: DomainRecord) -> list[Domain]:
        """Live definitions of this domain's save images that may still be restored."""
        out = []
        for image in self.state.save_images(rec.name):
            try:
                out.append(Domain.load(image / SAVE_XML))
            except (HarnessError, OSError):
                continue  # not an image any more: nothing to protect
        return out

    async def _reconcile(self, rec: DomainRecord) -> dict[str, object] | None:
        """Drop devices whose removal CHV has finished since a detach timed out.

        libvirt handles a late DEVICE_DELETED the same way: the device leaves the live
        definition when the hypervisor reports it gone (guest eject, or a reboot or
        restore that rebuilt the VM without it). Returns the ``vm.info`` it read, if any.
        """
        if rec.runtime is None or not rec.runtime.pending or rec.client is None:
            return None
        assert rec.live is not None
        info = await rec.client.info()
        present = set(chv_bdfs(info)) | set(device_tree(info))
        gone = [a for a in rec.runtime.pending if a not in present]
        if not gone:
            return info
        live = rec.live.copy()
        for device in list(live.devices()):
            if chv_id(device, self.caps) in gone:
                live.remove_device(device.key)
        rec.runtime.pending = [a for a in rec.runtime.pending if a not in gone]
        self.state.save_live(live, rec.runtime)
        rec.live = live
        return info

    def _check_alias(self, rec: DomainRecord, device: Device) -> None:
        """CHV refuses ids starting with ``__`` and ids used twice: refuse them first."""
        alias = device.alias or ""
        if alias.startswith("__"):
            raise DriverError(
                f"{device.label}: alias '{alias}' is not valid (identifiers starting with "
                "'__' are reserved by Cloud Hypervisor)"
            )
        for dom in (rec.live, rec.persistent):
            for other in dom.devices() if dom is not None else ():
                if other.alias == alias and other.key != device.key:
                    raise DriverError(
                        f"{device.label}: alias '{alias}' is already used by {other.label}"
                    )

    async def attach_device(
        self, name: str, xml: str, flags: AttachFlags = AttachFlags(), *, source: str = "<string>"
    ) -> Device:
        """Attach one device; returns the device as recorded (alias and address)."""
        rec = self._get(name)
        affect_live, affect_config = self._targets(rec, flags)
        await self._reconcile(rec)
        try:
            device = Device.from_xml(xml, source=source)
            kind = chv_kind(device)
        except HarnessError as exc:
            raise DriverError(str(exc)) from exc
        except KeyError:
            raise DriverError(f"{source}: this device is not one CHV creates") from None
        if affect_live and kind not in HOTPLUG_KINDS:
            raise DriverError(
                f"Operation not supported: {device.label} cannot be hot-plugged to CHV "
                f"(CHV hot-plugs {', '.join(sorted(HOTPLUG_KINDS))})"
            )
        targets = [d for d, on in ((rec.live, affect_live), (rec.persistent, affect_config)) if on]
        for dom in targets:
            assert dom is not None
            if dom.find(device.key) is not None:
                side = "live" if dom is rec.live else "persistent"
                raise DriverError(f"{device.label} already exists in the {side} definition")
        # the same device in the other definition (it is in no target, checked above)
        twins = [t for d in (rec.live, rec.persistent) if d and (t := d.find(device.key))]
        if device.alias is None:
            twin_alias = twins[0].alias if twins else None
            device.set_alias(twin_alias or self._unique_alias(rec, device))
        self._check_alias(rec, device)
        try:
            if self.caps.can_address(kind) and quirks_mod.addresses(
                self.quirks, kind, device.element
            ):
                live, pers, saved = quirks_mod.address_inputs(
                    self.quirks,
                    affect_live=affect_live,
                    affect_config=affect_config,
                    live=rec.live,
                    persistent=rec.persistent,
                    saved=self._saved_images(rec),
                    state=self.fork,
                    name=rec.name,
                )
                address = choose_hotplug_address(
                    device,
                    live=live,
                    persistent=pers,
                    segments=self.segments,
                    saved=saved,
                    host_bridge_all_segments=self.caps.host_bridge_all_segments,
                )
                device.set_address(address)
            elif self.caps.can_address(kind):
                device.set_address(None)
            elif self.caps.device_id_kinds:
                # a class this release cannot pin (CHV cannot hot-plug it either, so this
                # is a config attach): record the slot CHV will give it at the next boot
                # of the persistent definition, where every other device is pinned (C4)
                assert rec.persistent is not None
                if device.address is not None:
                    self._refuse_explicit([device])
                device.set_address(SlotMap.from_domains(rec.persistent).lowest_free(0))
            elif device.address is not None:
                self._refuse_explicit([device])
        except HarnessError as exc:
            raise DriverError(str(exc)) from exc
        if affect_live:
            assert rec.client is not None and rec.live is not None
            quirks_mod.hotplug_net_id(self.quirks, device, rec.live)
            try:
                result = await rec.client.add_device(kind, device_body(device, self.caps))
            except (ChvError, HarnessError) as exc:
                quirks_mod.on_refused(self.quirks, self.fork, rec.name, kind, device.address)
                if quirks_mod.keeps_refused(self.quirks, kind) and rec.runtime is not None:
                    rec.live = rec.live.copy()
                    rec.live.add_device(
                        Device.from_xml(etree.tostring(device.element, encoding="unicode"))
                    )
                    self.state.save_live(rec.live, rec.runtime)
                raise DriverError(f"failed to attach {device.label}: {exc}") from exc
            if result is not None and not self.caps.can_address(kind):
                device.set_address(PciAddress.from_chv_bdf(str(result["bdf"])))
        text = etree.tostring(device.element, encoding="unicode")
        if affect_live:
            assert rec.live is not None and rec.runtime is not None
            new_live = rec.live.copy()
            new_live.add_device(Device.from_xml(text))
            self.state.save_live(new_live, rec.runtime)
            rec.live = new_live
        if affect_config:
            assert rec.persistent is not None
            new_pers = rec.persistent.copy()
            copy = Device.from_xml(text)
            if not self.caps.device_id_kinds:
                copy.set_address(None)
            new_pers.add_device(copy)
            self._predict_unpinned(new_pers)
            self.state.save_persistent(new_pers)
            rec.persistent = new_pers
        return device

    async def detach_device(
        self, name: str, xml: str, flags: AttachFlags = AttachFlags(), *, source: str = "<string>"
    ) -> None:
        rec = self._get(name)
        affect_live, affect_config = self._targets(rec, flags)
        await self._reconcile(rec)
        try:
            spec = Device.from_xml(xml, source=source)
        except HarnessError as exc:
            raise DriverError(str(exc)) from exc
        found_live = found_pers = None
        if affect_live:
            assert rec.live is not None
            by_name, found_live, why = quirks_mod.find_live_nic(self.quirks, rec.live, spec)
            if not by_name:
                found_live = rec.live.find(spec.key)
            if found_live is None:
                why = why or f"{spec.label} not found in the live definition of '{name}'"
                raise DriverError(why)
        if affect_config:
            assert rec.persistent is not None
            found_pers = rec.persistent.find(spec.key)
            if found_pers is None:
                raise DriverError(
                    f"{spec.label} not found in the persistent definition of '{name}'"
                )
        if found_live is not None:
            kind = chv_kind(found_live)
            if kind not in HOTPLUG_KINDS:
                raise DriverError(
                    f"Operation not supported: {found_live.label} cannot be hot-unplugged from CHV"
                )
            assert rec.client is not None and rec.runtime is not None
            device_id = chv_id(found_live, self.caps)
            if device_id not in rec.runtime.pending:  # CHV was asked already: wait again
                try:
                    await rec.client.remove_device(device_id)
                except ChvError as exc:
                    raise DriverError(f"failed to detach {found_live.label}: {exc}") from exc
            try:
                if quirks_mod.waits_for_eject(self.quirks):
                    await self._wait_removed(rec, found_live, device_id)
            except DriverError:
                if device_id not in rec.runtime.pending:
                    rec.runtime.pending.append(device_id)
                    assert rec.live is not None
                    self.state.save_live(rec.live, rec.runtime)
                raise
            if device_id in rec.runtime.pending:
                rec.runtime.pending.remove(device_id)
            quirks_mod.on_live_detach(
                self.quirks,
                self.fork,
                rec.name,
                found_live.address,
                transient=rec.persistent is None,
            )
        if found_live is not None:
            assert rec.live is not None and rec.runtime is not None
            new_live = rec.live.copy()
            new_live.remove_device(spec.key)
            self.state.save_live(new_live, rec.runtime)
            rec.live = new_live
        if found_pers is not None:
            assert rec.persistent is not None
            new_pers = rec.persistent.copy()
            new_pers.remove_device(spec.key)
            self._predict_unpinned(new_pers)
            self.state.save_persistent(new_pers)
            rec.persistent = new_pers

    async def _wait_removed(self, rec: DomainRecord, device: Device, device_id: str) -> None:
        """Wait until CHV's device tree no longer has the device (guest eject)."""
        assert rec.client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.detach_timeout
        delay = 0.0
        while True:
            info = await rec.client.info()
            if device_id not in chv_bdfs(info) and device_id not in device_tree(info):
                return
            if loop.time() >= deadline:
                where = f" at {device.address}" if device.address else ""
                raise DriverError(
                    f"timed out after {self.detach_timeout:g}s waiting for the guest to eject "
                    f"{device.label}{where}; the device stays in the live definition and its "
                    "slot stays reserved"
                )
            await asyncio.sleep(min(delay, deadline - loop.time()))  # never past the deadline
            delay = min(0.05, delay * 2 or 0.001)

    # -- save / restore --------------------------------------------------------
    async def save(self, name: str, path: Path) -> None:
        """``virsh save``: snapshot the running domain into ``path`` and stop it."""
        await saverestore.save(self, name, path)

    async def managedsave(self, name: str) -> None:
        await saverestore.managedsave(self, name)

    async def restore(self, path: Path) -> str:
        """``virsh restore``: start a domain from a save image."""
        return await saverestore.restore(self, path)

    # -- migration (harness.driver.migration) -----------------------------------
    async def migrate(
        self,
        name: str,
        dest: Driver,
        *,
        live: bool = True,
        p2p: bool = True,
        persistent: bool = False,
        undefinesource: bool = False,
        transport: str = "unix",
    ) -> None:
        """``virsh migrate --live --p2p`` to another host (``dest``, another daemon);
        see :func:`harness.driver.migration.migrate`."""
        await migration.migrate(
            self,
            name,
            dest,
            live=live,
            p2p=p2p,
            persistent=persistent,
            undefinesource=undefinesource,
            transport=transport,
        )
