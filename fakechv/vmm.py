"""One emulated Cloud Hypervisor VMM (at most one VM), in memory.

:class:`Vmm` holds the stored VmConfig and, once booted, the VM: its state and
its :class:`fakechv.device_manager.DeviceManager` (PCI segments, device tree,
``device_id_cnt``, the devices awaiting guest eject), the way vmm/src/vm.rs and
lib.rs hold CHV's. Every public operation either succeeds or raises
:class:`fakechv.errors.ApiError` with CHV's message chain (starting "Error from
API"). Rollback of a failed operation is the caller's job (:meth:`Vmm.checkpoint`
/ :meth:`Vmm.rollback`, used by :class:`fakechv.api.Api`), except for the one
failure CHV leaves a trace of (a virtio hot-add that fails at slot allocation,
see :mod:`fakechv.device_manager`); such errors carry ``commit=True``.

Differences from real CHV that are deliberate (and those of the device manager,
see :mod:`fakechv.device_manager`):

A failed vm.boot keeps what CHV's device manager wrote into the config before the
failure (generated ids, detected image types; a failed disk open loses the disk list,
see :mod:`fakechv.device_manager`). A boot that fails after the devices were made (the
disk locks, the kernel) leaves the VM created, not running, with its device tree, as
``vm_boot`` keeps the ``Vm`` whose ``boot`` failed (vmm/src/lib.rs@v53.0:2285-2287).
* Guest-driven events are not emulated except device eject (see
  :class:`EjectPolicy`); vm.power-button is accepted and does nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fakechv.config import num_pci_segments, remove_device_entry, serialize_config, validate
from fakechv.device_manager import DeviceManager, EjectPolicy, EjectScheduler
from fakechv.devices import DEVICE_KINDS, DeviceKind
from fakechv.devicetree import DeviceTree
from fakechv.errors import API_ERROR, ApiError, ErrorKind, api_error, debug_str, io_error_text
from fakechv.fds import HeldFds
from fakechv.images import Images
from fakechv.jsoncopy import copy_json
from fakechv.profiles import Profile

__all__ = ["EjectPolicy", "VmState", "Vmm"]

EventSink = Callable[[dict[str, Any]], None]


class VmState:
    CREATED = "Created"
    RUNNING = "Running"
    PAUSED = "Paused"
    SHUTDOWN = "Shutdown"


@dataclass
class _Vm:
    devices: DeviceManager
    state: str = VmState.RUNNING
    #: which build of the VM this is: survives a checkpoint copy and its rollback,
    #: changes with every boot, reboot, restore and migration
    generation: int = 0


#: counters that do not start at 0: a block device's latencies start at u64::MAX, the
#: averages are reported divided by LATENCY_SCALE (virtio-devices/src/block.rs@v53.0
#: :140-150, 1260-1295)
_COUNTER_START = {
    "read_latency_min": 2**64 - 1,
    "read_latency_max": 2**64 - 1,
    "read_latency_avg": (2**64 - 1) // 10000,
    "write_latency_min": 2**64 - 1,
    "write_latency_max": 2**64 - 1,
    "write_latency_avg": (2**64 - 1) // 10000,
}


class Vmm:
    """The VMM: VM lifecycle, state, events; devices through the VM's
    :class:`~fakechv.device_manager.DeviceManager`."""

    def __init__(
        self,
        profile: Profile,
        *,
        event_sink: EventSink | None = None,
        eject: EjectPolicy | None = None,
        images: Images | None = None,
    ) -> None:
        self.profile = profile
        #: opens the disk images (:mod:`fakechv.images`); default ``virtual`` (every
        #: path an image, locks within this VMM); the fakechv command's is ``check``
        self.images = images or Images("virtual")
        self.event_sink = event_sink
        self.config: dict[str, Any] | None = None
        self.vm: _Vm | None = None
        #: number of fds received with each add-net, by device id
        self.net_fds: dict[str, int] = {}
        #: the received fds themselves, and when they are closed (:mod:`fakechv.fds`)
        self.held_fds = HeldFds()
        self._start = time.monotonic()
        self._ejects = EjectScheduler(eject or EjectPolicy(), self._eject)
        self._builds = 0
        #: moves with every change of what vm.info shows (its answer is kept until then):
        #: each request that may change the VM (checkpoint), a guest's eject, the end of
        #: an outgoing migration's worker
        self.version = 0

    @property
    def eject(self) -> EjectPolicy:
        """When the emulated guest ejects removed devices (assignable)."""
        return self._ejects.policy

    @eject.setter
    def eject(self, policy: EjectPolicy) -> None:
        self._ejects.policy = policy

    # ------------------------------------------------------------ helpers

    def emit(self, source: str, event: str, properties: dict[str, str] | None = None) -> None:
        """Send one event in CHV's shape to the event sink."""
        if self.event_sink is None:
            return
        elapsed = time.monotonic() - self._start
        secs = int(elapsed)
        self.event_sink(
            {
                "timestamp": {"secs": secs, "nanos": int((elapsed - secs) * 1e9)},
                "source": source,
                "event": event,
                "properties": dict(properties) if properties is not None else None,
            }
        )

    def checkpoint(self) -> Any:
        """An opaque copy of the whole state, for :meth:`rollback`."""
        self._ejects.ejected.clear()  # ejects before now are part of the copy
        # a request that may change the VM follows; it holds the API lock, so no vm.info
        # answer is made before it is over
        self.version += 1
        # the profile is shared, never copied; the config is plain JSON and shares
        # nothing with the VM's objects; the net fds are names and numbers
        vm = self.vm
        if vm is not None:
            devices = copy.deepcopy(vm.devices, {id(self.profile): self.profile})
            vm = dataclasses.replace(vm, devices=devices)
        return (copy_json(self.config), vm, dict(self.net_fds))

    def rollback(self, saved: Any) -> None:
        """Go back to a :meth:`checkpoint` (each checkpoint is rolled back at most once).

        The guest is not rolled back: a delayed eject that happened since the
        checkpoint (its timer fired while the failed request waited) stays done."""
        self.config, self.vm, self.net_fds = saved
        for generation, device_id in list(self._ejects.ejected):
            self._eject(generation, device_id, False)
        # an image opened by the failed request is closed; the VM's own stay open
        keep = {id(i) for i in self.vm.devices.images.values()} if self.vm is not None else set()
        self.images.close_unreferenced(keep)

    @property
    def state(self) -> str | None:
        """ "Created", "Running", "Paused", or None when no VM is created."""
        if self.config is None:
            return None
        return self.vm.state if self.vm is not None else VmState.CREATED

    # ------------------------------------------------------------ building a VM

    def _build(
        self,
        config: dict[str, Any],
        action: str,
        *,
        restore_tree: DeviceTree | None = None,
        device_id_cnt: int = 0,
    ) -> _Vm:
        """``Vm::new``: validate, then let a new device manager create and place
        every device.

        Mutates ``config`` (generated ids written back); raises ApiError
        wrapped with ``action``.
        """
        p = self.profile
        platform = config.get("platform")
        if isinstance(platform, dict) and platform.get("iommu_segments") is not None:
            config["iommu"] = True  # VmConfig::validate (vmm/src/config.rs@v53.0:3454)
        try:
            boot_ids = validate(p, config)
        except ApiError as exc:
            raise exc.wrap(API_ERROR, action) from None
        nseg = num_pci_segments(config)
        self._builds += 1
        vm = _Vm(
            generation=self._builds,
            devices=DeviceManager(
                p, nseg, boot_ids=boot_ids, device_id_cnt=device_id_cnt, images=self.images
            ),
        )
        try:
            vm.devices.create_devices(config, action, restore_tree=restore_tree)
        except BaseException:
            vm.devices.close_images()
            raise
        return vm

    def _boot_vm(self, vm: _Vm, config: dict[str, Any], action: str) -> None:
        """``Vm::boot`` after ``Vm::new``: lock the disk images, load the kernel. A
        failure leaves the VM created (not running) with its devices."""
        vm.state = VmState.CREATED
        vm.devices.lock_images(action)
        self._check_kernel(config, action)
        vm.state = VmState.RUNNING

    def _check_kernel(self, config: dict[str, Any], action: str) -> None:
        """The payload's kernel must open (``Vm::load_kernel``: "Cannot open kernel
        file"); only under the ``check`` images mode, like the disks."""
        if self.images.mode != "check":
            return
        payload = config.get("payload")
        kernel = payload.get("kernel") if isinstance(payload, dict) else None
        if not kernel:
            return
        try:
            with open(str(kernel), "rb"):
                pass
        except OSError as exc:
            raise api_error(action, "Cannot open kernel file", io_error_text(exc)) from None

    # ------------------------------------------------------------ lifecycle

    def create(self, config: dict[str, Any]) -> None:
        """vm.create: store the (deserialized) config; no validation."""
        if self.config is not None:
            raise api_error("The VM could not be created", "VM is already created")
        self.config = copy_json(config)

    def boot(self) -> None:
        action = "The VM could not boot"
        if self.vm is not None and self.profile.boot_refuses_existing_vm:
            raise api_error(action, "VM is already created")
        self.emit("vm", "booting")
        if self.vm is not None:  # <= v52: Vm::boot on the existing VM
            if self.vm.state == VmState.CREATED and self.config is not None:
                try:
                    self._boot_vm(self.vm, self.config, action)
                except ApiError as exc:
                    exc.commit = True
                    raise
                self.emit("vm", "booted")
                return
            if self.vm.state == VmState.PAUSED:
                self.emit("vm", "resuming")
                self.vm.state = VmState.RUNNING
                self.emit("vm", "resumed")
                self.emit("vm", "booted")
                return
            raise api_error(
                action,
                f"invalid VM state transition: {self.vm.state} to Running",
                kind=ErrorKind.INVALID_STATE,
            )
        if self.config is None:
            raise api_error(action, "VM config is missing", kind=ErrorKind.MISSING_CONFIG)
        config = copy_json(self.config)
        try:
            vm = self._build(config, action)
        except ApiError as exc:
            self.config = config  # what the device manager wrote before failing stays
            exc.commit = True
            raise
        self.config = config
        self.vm = vm
        self.held_fds.devices_created()
        try:
            self._boot_vm(vm, config, action)
        except ApiError as exc:
            exc.commit = True
            raise
        self.emit("vm", "booted")

    def shutdown(self) -> None:
        if self.vm is None:
            raise api_error("The VM could not shutdown", "VM is not running")
        self._teardown()
        self.emit("vm", "shutdown")

    def _teardown(self) -> None:
        self._ejects.cancel()
        if self.vm is not None:
            self.vm.devices.close_images()
            self.held_fds.devices_dropped()
        self.vm = None

    def reboot(self) -> None:
        action = "The VM could not reboot"
        self.emit("vm", "rebooting")
        if self.vm is None or self.config is None:
            raise api_error(action, "VM is not created", kind=ErrorKind.NOT_CREATED)
        config = copy_json(self.config)
        vm = self._build(config, action)  # opens the images; the old VM's go next
        self._teardown()
        self.config = config
        self.vm = vm
        self.held_fds.devices_created()
        self._boot_vm(vm, config, action)
        self.emit("vm", "rebooted")

    def power_button(self) -> None:
        if self.vm is None:
            raise api_error("Error triggering power button", "VM is not running")

    def nmi(self) -> None:
        if self.vm is None:
            raise api_error("Error triggering NMI", "VM is not running")

    def pause(self) -> None:
        action = "The VM could not be paused"
        if self.vm is None:
            raise api_error(action, "VM is not running")
        self.emit("vm", "pausing")
        if self.vm.state != VmState.RUNNING:
            raise api_error(
                action,
                "Cannot pause VM",
                "Failed to pause migratable component",
                f"Invalid transition: InvalidStateTransition({self.vm.state}, Paused)",
                kind=ErrorKind.INVALID_STATE,
            )
        self.vm.state = VmState.PAUSED
        self.emit("vm", "paused")

    def resume(self) -> None:
        action = "The VM could not resume"
        if self.vm is None:
            raise api_error(action, "VM is not running")
        self.emit("vm", "resuming")
        if self.vm.state != VmState.PAUSED:
            raise api_error(
                action,
                "Cannot resume VM",
                "Failed to resume migratable component",
                f"Invalid transition: InvalidStateTransition({self.vm.state}, Running)",
                kind=ErrorKind.INVALID_STATE,
            )
        self.vm.state = VmState.RUNNING
        self.emit("vm", "resumed")

    def delete(self) -> None:
        if self.config is None:
            return
        if self.vm is not None:
            self.shutdown()
        self.config = None
        self.net_fds.clear()
        self.held_fds.config_dropped()
        self.emit("vm", "deleted")

    def vmm_shutdown(self) -> None:
        self.delete()
        self.emit("vmm", "shutdown")

    # ------------------------------------------------------------ queries

    def info(self) -> dict[str, Any]:
        """vm.info's body."""
        if self.config is None:
            raise api_error(
                "The VM info is not available", "VM is not created", kind=ErrorKind.NOT_CREATED
            )
        memory = self.config.get("memory") or {}
        size = int(memory.get("size", 0))
        for zone in memory.get("zones") or []:
            if isinstance(zone, dict):
                size += int(zone.get("size", 0))
        config = serialize_config(self.profile, self.config)
        if self.vm is not None:
            self._runtime_config(config)
        out: dict[str, Any] = {
            "config": config,
            "state": self.state,
            "memory_actual_size": size,
        }
        if self.vm is not None:
            out["device_tree"] = self.vm.devices.tree.to_json(self.profile)
        elif self.profile.null_unset:
            out["device_tree"] = None
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        if self.vm is None:
            raise api_error("The VM info is not available", "VM is not running")
        out: dict[str, dict[str, int]] = {}
        for ident, kind_name in self.vm.devices.kinds.items():
            names = DEVICE_KINDS[kind_name].counters
            if names:
                out[ident] = {name: _COUNTER_START.get(name, 0) for name in names}
        return out

    def running_vcpus(self) -> int:
        """How many vCPU threads CHV runs now: the boot vCPUs of a booted VM (a paused
        one keeps them), none before the boot or after the shutdown."""
        if self.vm is None or self.config is None:
            return 0
        cpus = self.config.get("cpus")
        boot = cpus.get("boot_vcpus") if isinstance(cpus, dict) else None
        return int(boot) if isinstance(boot, int) else 1

    def bdf_of(self, device_id: str) -> str | None:
        """The BDF of a device of the booted VM (None if unknown or not booted)."""
        return self.vm.devices.bdf_of(device_id) if self.vm is not None else None

    def _runtime_config(self, config: dict[str, Any]) -> None:
        """What a booted CHV adds to the config it reports: the pty path of a Pty
        serial port or console (console_devices.rs writes it into ``file``, and libvirt
        reads it from there), and one ``-1`` per tap fd a net was given
        (``serialize_netconfig_fds``: fd numbers mean nothing outside the process)."""
        for n, key in enumerate(("serial", "console")):
            dev = config.get(key)
            if isinstance(dev, dict) and dev.get("mode") == "Pty" and not dev.get("file"):
                dev["file"] = f"/dev/pts/{100 + n}"
        for net in config.get("net") or []:
            count = self.net_fds.get(str(net.get("id", "")), 0)
            if isinstance(net, dict) and count and "fds" in net:
                net["fds"] = [-1] * count  # v52 writes unset fields as null: in place
            elif isinstance(net, dict) and count:
                # in NetConfig's field order: after vhost_mode (vm_config.rs NetConfig)
                items = list(net.items())
                at = next((n + 1 for n, (k, _v) in enumerate(items) if k == "vhost_mode"), None)
                at = len(items) if at is None else at
                items.insert(at, ("fds", [-1] * count))
                net.clear()
                net.update(items)

    # ------------------------------------------------------------ devices

    def add_device(
        self, kind_name: str, device: dict[str, Any], *, fds: Sequence[int] = ()
    ) -> tuple[str, str] | None:
        """vm.add-*: returns ``(id, bdf)`` on a booted VM, None when only stored.

        ``fds`` (a net's taps) are held by :attr:`held_fds` once the device is added;
        the caller keeps them when this raises (CHV leaves them open then)."""
        kind = DEVICE_KINDS[kind_name]
        action = kind.add_error or "The device could not be added to the VM"
        key = kind.config_key
        assert key is not None
        if self.config is None:
            raise api_error(action, "VM is not created", kind=ErrorKind.NOT_CREATED)
        dev = copy_json(device)
        trial = copy_json(self.config)
        checked = copy_json(dev)
        if kind.takes_fds and fds:
            checked["fds"] = [-1] * len(fds)  # the received fds, as CHV puts them in the config
        if kind.single:
            if trial.get(key) is not None:
                assert kind.too_many_error is not None
                raise api_error(action, kind.too_many_error)
            trial[key] = checked
        else:
            trial.setdefault(key, [])
            if trial[key] is None:
                trial[key] = []
            trial[key].append(checked)
        try:
            validate(self.profile, trial)
        except ApiError as exc:
            raise exc.wrap(API_ERROR, action) from None
        if self.vm is None:
            self._append(kind, dev)
            if kind.takes_fds:
                self.net_fds[str(dev.get("id", ""))] = len(fds)
                given = dev.get("id")
                self.held_fds.adopt(None if given is None else str(given), fds, created=False)
            return None
        ident, bdf = self.vm.devices.add_device(kind, dev, self.config, action)
        self._append(kind, dev)
        if kind.takes_fds:
            self.net_fds[ident] = len(fds)
            self.held_fds.adopt(ident, fds, created=True)
        return ident, bdf

    def _append(self, kind: DeviceKind, dev: dict[str, Any]) -> None:
        assert self.config is not None and kind.config_key is not None
        if kind.single:
            self.config[kind.config_key] = dev
            return
        items = self.config.get(kind.config_key)
        if not isinstance(items, list):
            items = []
            self.config[kind.config_key] = items
        items.append(dev)

    def remove_device(self, ident: str) -> None:
        """vm.remove-device."""
        action = "The device could not be removed from the VM"
        if self.vm is None:
            if self.config is None:
                raise api_error(action, "VM is not created", kind=ErrorKind.NOT_CREATED)
            if not remove_device_entry(self.config, ident):
                raise api_error(
                    action,
                    f"No device with id {debug_str(ident)} to remove",
                    kind=ErrorKind.NO_DEVICE_TO_REMOVE,
                )
            self.net_fds.pop(ident, None)
            self.held_fds.removed(ident, booted=False)
            return
        vm = self.vm
        assert self.config is not None
        device_id = vm.devices.remove_device(ident, self.config, action)
        self.net_fds.pop(ident, None)
        self.held_fds.removed(device_id, booted=True)
        self._ejects.schedule(vm.generation, device_id)

    def _eject(self, generation: int, device_id: str, announce: bool = True) -> bool:
        """Eject ``device_id`` from the VM if it is still build ``generation`` and the
        device awaits eject; announce it with a ``device-removed`` event."""
        vm = self.vm
        if vm is None or vm.generation != generation:
            return False
        bdf = vm.devices.eject(device_id)
        if bdf is None:
            return False
        self.version += 1
        self.held_fds.ejected(device_id)
        if announce:
            self.emit("vm", "device-removed", {"id": device_id, "bdf": bdf})
        return True

    def eject_now(self, device_id: str) -> bool:
        """Let the guest eject ``device_id`` now; False if it is not pending."""
        if self.vm is None:
            return False
        return self._eject(self.vm.generation, device_id)

    def pending_ejects(self) -> dict[str, str]:
        """Devices removed but not yet ejected: id -> BDF."""
        return dict(self.vm.devices.pending) if self.vm is not None else {}

    # ------------------------------------------------------------ resize

    def resize(
        self, desired_vcpus: int | None, desired_ram: int | None, desired_balloon: int | None
    ) -> None:
        if self.config is None:
            raise api_error(
                "The VM could not be resized", "VM is not created", kind=ErrorKind.NOT_CREATED
            )
        if self.vm is None:
            if desired_vcpus is not None:
                self.config.setdefault("cpus", {})["boot_vcpus"] = desired_vcpus
            if desired_ram is not None:
                self.config.setdefault("memory", {})["size"] = desired_ram
            balloon = self.config.get("balloon")
            if desired_balloon is not None and isinstance(balloon, dict):
                balloon["size"] = desired_balloon

    def resize_disk(self, ident: str, desired_size: int) -> None:
        action = "The disk could not be resized"
        if self.config is None:
            raise api_error(action, "VM is not created", kind=ErrorKind.NOT_CREATED)
        if self.vm is None:
            raise api_error(action, "Failed resizing a disk image")

    def resize_zone(self, ident: str, desired_ram: int) -> None:
        action = "The memory zone could not be resized"
        if self.config is None:
            raise api_error(action, "VM is not created", kind=ErrorKind.NOT_CREATED)
        if self.vm is None:
            for zone in (self.config.get("memory") or {}).get("zones") or []:
                if isinstance(zone, dict) and zone.get("id") == ident:
                    zone["size"] = desired_ram
                    return
            raise api_error(action, "Failed resizing a memory zone")

    # ------------------------------------------------------------ snapshot / migration

    def export_state(self) -> dict[str, Any]:
        """What a snapshot or migration carries (config, device tree, counter)."""
        if self.vm is None or self.config is None:
            raise ValueError("no booted VM to export")
        return {
            "config": copy_json(self.config),
            "device_tree": self.vm.devices.tree.state(),
            "device_id_cnt": self.vm.devices.device_id_cnt,
            "vm_state": self.vm.state,
        }

    def _rebuild(self, state: dict[str, Any], action: str, vm_state: str) -> None:
        try:
            config = copy_json(state["config"])
            tree = DeviceTree.from_state(state["device_tree"])
            cnt = int(state["device_id_cnt"])
            if not isinstance(config, dict):
                raise ValueError("config is not an object")
        except (KeyError, TypeError, ValueError) as exc:
            raise api_error(action, f"fakechv: malformed VM state: {exc}") from None
        vm = self._build(config, action, restore_tree=tree, device_id_cnt=cnt)
        vm.devices.lock_images(action, strict=False)
        vm.state = vm_state
        self.config = config
        self.vm = vm
        self.held_fds.devices_created()

    def snapshot(self, destination_url: str) -> None:
        from fakechv.snapshot import SnapshotError, write_snapshot

        action = "The VM could not be snapshotted"
        if self.vm is None:
            raise api_error(action, "VM is not running")
        self.emit("vm", "snapshotting")
        if self.vm.state != VmState.PAUSED:
            raise api_error(
                action,
                "Cannot snapshot VM",
                "Failed to snapshot migratable component",
                "Trying to snapshot while VM is running",
            )
        state = self.export_state()
        config = serialize_config(self.profile, state.pop("config"))
        try:
            write_snapshot(destination_url, config, state)
        except SnapshotError as exc:
            raise api_error(
                action,
                "Cannot send VM snapshot",
                "Failed to send migratable component snapshot",
                *exc.messages,
            ) from None
        self.emit("vm", "snapshotted")

    def restore(self, source_url: str, *, resume: bool = False) -> None:
        from fakechv.snapshot import SnapshotError, read_snapshot

        action = "The VM could not be restored"
        if self.vm is not None or self.config is not None:
            raise api_error(action, "VM is already created")
        try:
            config, state = read_snapshot(source_url, context=self.profile.snapshot_error_context)
        except SnapshotError as exc:
            raise api_error(
                action,
                "Cannot restore VM",
                "Failed to receive migratable component snapshot",
                *exc.messages,
            ) from None
        from fakechv.config import ConfigError, deserialize

        try:
            config = deserialize(self.profile, "VmConfig", config)
        except ConfigError as exc:
            raise api_error(
                action, "Cannot restore VM", f"Error deserializing config: {exc}"
            ) from None
        self.emit("vm", "restoring")
        self._rebuild({**state, "config": config}, action, VmState.PAUSED)
        self.emit("vm", "restored")
        if resume:
            self.resume()

    def export_migration_state(self) -> dict[str, Any]:
        """The state a migration carries; BDFs are identical on the destination."""
        return self.export_state()

    def import_migration_state(self, state: dict[str, Any]) -> None:
        """Become the destination of a migration (VM running with the same BDFs)."""
        action = self.profile.migration_receive_error
        if self.config is not None:
            raise api_error(
                action, "Failed to receive migratable component snapshot", "VM is already created"
            )
        self._rebuild(state, action, VmState.RUNNING)

    def finish_outgoing_migration(self) -> None:
        """After a successful send the source VM is shut down (and CHV exits)."""
        self.version += 1
        self._teardown()
        self.config = None
        self.held_fds.config_dropped()
