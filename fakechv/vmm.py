"""One emulated Cloud Hypervisor VMM (at most one VM), in memory.

:class:`Vmm` holds the stored VmConfig and, once booted, the VM: its PCI
segments, device tree, ``device_id_cnt`` and the devices awaiting guest eject.
Every public operation either succeeds or raises :class:`fakechv.errors.ApiError`
with CHV's message chain (starting "Error from API"). Rollback of a failed
operation is the caller's job (:meth:`Vmm.checkpoint` / :meth:`Vmm.rollback`,
used by :class:`fakechv.api.Api`), except for the one failure CHV leaves a
trace of: when a virtio hot-add fails at slot allocation, the device node
``<id>`` created before the allocation stays in the device tree (and a generated
id stays consumed), so a retry with the same id fails with "Invalid identifier
as it is not unique" (vmm/src/device_manager.rs@v53.0: ``make_virtio_block_device``
inserts the node at line 2888, ``add_virtio_pci_device`` allocates the slot at
4478 and inserts the ``_virtio-pci-<id>`` node only at 4589). Such errors carry
``commit=True``.

Differences from real CHV that are deliberate:

* A failed vm.boot leaves the config exactly as it was; CHV keeps the ids the
  device manager generated before the failure written into the config (they
  are regenerated identically on the next boot, so BDFs do not change).
* Guest-driven events are not emulated except device eject (see
  :class:`EjectPolicy`); vm.power-button is accepted and does nothing.
* Backing files are never opened: a disk, tap or socket that does not exist on
  the host is accepted (CHV would fail to create the device).
* v52 without ``platform`` accepts ``pci_segment >= 1`` at validation and then
  panics in the device manager (index out of bounds); fakechv answers 500 with
  a message saying so instead of crashing.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fakechv.config import num_pci_segments, serialize_config, validate
from fakechv.devices import DEVICE_KINDS, DeviceKind
from fakechv.devicetree import DeviceTree
from fakechv.errors import ApiError, ErrorKind, brief
from fakechv.pci import PciTopology, parse_bdf
from fakechv.profiles import Profile

__all__ = ["EjectPolicy", "VmState", "Vmm"]

EventSink = Callable[[dict[str, Any]], None]

_API = "Error from API"
_DM = "Error from device manager"


class VmState:
    CREATED = "Created"
    RUNNING = "Running"
    PAUSED = "Paused"
    SHUTDOWN = "Shutdown"


@dataclass
class EjectPolicy:
    """When the emulated guest ejects a device after vm.remove-device.

    ``immediate``: right away (default); ``delay``: after ``delay_ms`` on the
    running asyncio loop (without a running loop it behaves like ``never``);
    ``never``: only through :meth:`Vmm.eject_now`.
    """

    mode: str = "immediate"
    delay_ms: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("immediate", "delay", "never"):
            raise ValueError(
                f"eject mode must be immediate, delay or never, not {brief(self.mode)}"
            )
        if isinstance(self.delay_ms, bool) or not isinstance(self.delay_ms, int):
            raise ValueError(f"eject delay_ms must be an integer, not {brief(self.delay_ms)}")
        if self.delay_ms < 0:
            raise ValueError(f"eject delay_ms must be >= 0, not {self.delay_ms}")


@dataclass
class _Vm:
    topology: PciTopology
    tree: DeviceTree
    device_id_cnt: int
    boot_ids: set[str]
    state: str = VmState.RUNNING
    #: device id -> kind name, for every device created
    kinds: dict[str, str] = field(default_factory=dict)
    #: device id -> BDF of devices removed but not yet ejected
    pending: dict[str, str] = field(default_factory=dict)
    #: which build of the VM this is: survives a checkpoint copy and its rollback,
    #: changes with every boot, reboot, restore and migration
    generation: int = 0


def _err(action: str, *inner: str, kind: ErrorKind = ErrorKind.INTERNAL) -> ApiError:
    return ApiError([_API, action, *inner], kind)


def _debug_str(text: str) -> str:
    """Rust's ``{:?}`` of a String."""
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


#: kinds whose DeviceManager add_* refuses ``iommu: true`` off the IOMMU segments
_IOMMU_HOTPLUG_CHECKED = frozenset({"disk", "pmem", "net", "vdpa", "vsock", "device"})

_REMOVE_LISTS = (
    "disks",
    "net",
    "fs",
    "pmem",
    "vdpa",
    "devices",
    "user_devices",
    "generic_vhost_user",
)


def _config_remove(config: dict[str, Any], ident: str) -> bool:
    """``VmConfig::remove_device``: drop the entry with ``id == ident``."""
    removed = False
    for key in _REMOVE_LISTS:
        items = config.get(key)
        if isinstance(items, list):
            kept = [d for d in items if not (isinstance(d, dict) and d.get("id") == ident)]
            if len(kept) != len(items):
                config[key] = kept
                removed = True
    vsock = config.get("vsock")
    if isinstance(vsock, dict) and vsock.get("id") == ident:
        del config["vsock"]
        removed = True
    return removed


class Vmm:
    """The VMM: VM lifecycle, devices, PCI allocation and events."""

    def __init__(
        self,
        profile: Profile,
        *,
        event_sink: EventSink | None = None,
        eject: EjectPolicy | None = None,
    ) -> None:
        self.profile = profile
        self.event_sink = event_sink
        self.eject = eject or EjectPolicy()
        self.config: dict[str, Any] | None = None
        self.vm: _Vm | None = None
        #: number of fds received with each add-net, by device id
        self.net_fds: dict[str, int] = {}
        self._start = time.monotonic()
        self._timers: set[asyncio.TimerHandle] = set()
        self._builds = 0
        #: (generation, device id) of delayed ejects that happened: kept across a
        #: rollback, which must not bring an ejected device back
        self._ejected: set[tuple[int, str]] = set()

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
        self._ejected.clear()  # ejects before now are part of the copy
        return copy.deepcopy((self.config, self.vm, self.net_fds))

    def rollback(self, saved: Any) -> None:
        """Go back to a :meth:`checkpoint` (each checkpoint is rolled back at most once).

        The guest is not rolled back: a delayed eject that happened since the
        checkpoint (its timer fired while the failed request waited) stays done."""
        self.config, self.vm, self.net_fds = saved
        vm = self.vm
        if vm is not None:
            for generation, device_id in list(self._ejected):
                if generation == vm.generation and device_id in vm.pending:
                    self._eject(vm, device_id, announce=False)

    @property
    def state(self) -> str | None:
        """ "Created", "Running", "Paused", or None when no VM is created."""
        if self.config is None:
            return None
        return self.vm.state if self.vm is not None else VmState.CREATED

    def _cancel_timers(self) -> None:
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        self._ejected.clear()

    def _next_name(self, vm: _Vm, prefix: str) -> str:
        start = vm.device_id_cnt
        while True:
            name = f"{prefix}{vm.device_id_cnt}"
            vm.device_id_cnt = (vm.device_id_cnt + 1) % (2**64)
            if name not in vm.boot_ids and name not in vm.tree:
                return name
            if vm.device_id_cnt == start:
                raise ApiError([_DM, "Failed to find an available device name"])

    def _explicit_slot(self, kind: DeviceKind, dev: dict[str, Any]) -> int | None:
        if not self.profile.accepts_pci_device_id(kind.name):
            return None
        slot = dev.get("pci_device_id")
        return int(slot) if slot is not None else None

    # ------------------------------------------------------------ building a VM

    def _plan(
        self, config: dict[str, Any], vm: _Vm
    ) -> list[tuple[DeviceKind, str, int, int | None]]:
        """The virtio devices in creation order: (kind, id, segment, explicit slot).
        Generates missing ids (written back into ``config``)."""
        p = self.profile
        plan: list[tuple[DeviceKind, str, int, int | None]] = []

        def single(kind_name: str, dev: dict[str, Any]) -> None:
            kind = DEVICE_KINDS[kind_name]
            ident = (
                dev.get("id")
                if p.rng_console_have_id or kind_name not in ("rng", "console")
                else None
            )
            assert kind.fixed_id is not None
            plan.append(
                (
                    kind,
                    str(ident or kind.fixed_id),
                    int(dev.get("pci_segment", 0)),
                    self._explicit_slot(kind, dev),
                )
            )

        def listed(kind_name: str) -> None:
            kind = DEVICE_KINDS[kind_name]
            assert kind.config_key is not None and kind.prefix is not None
            for dev in config.get(kind.config_key) or []:
                if dev.get("id") is None:
                    dev["id"] = self._next_name(vm, kind.prefix)
                plan.append(
                    (
                        kind,
                        str(dev["id"]),
                        int(dev.get("pci_segment", 0)),
                        self._explicit_slot(kind, dev),
                    )
                )

        console = config.get("console") or {"mode": "Tty"}
        if console.get("mode") != "Off":
            single("console", console)
        listed("disk")
        listed("net")
        single("rng", config.get("rng") or {"src": "/dev/urandom"})
        if p.has_generic_vhost_user:
            listed("generic_vhost_user")
        listed("fs")
        listed("pmem")
        vsock = config.get("vsock")
        if isinstance(vsock, dict):
            if vsock.get("id") is None:
                vsock["id"] = self._next_name(vm, "_vsock")
            kind = DEVICE_KINDS["vsock"]
            plan.append(
                (
                    kind,
                    str(vsock["id"]),
                    int(vsock.get("pci_segment", 0)),
                    self._explicit_slot(kind, vsock),
                )
            )
        memory = config.get("memory") or {}
        if memory.get("hotplug_method") == "VirtioMem":
            for zone in memory.get("zones") or []:
                if isinstance(zone, dict) and zone.get("hotplug_size") and "id" in zone:
                    plan.append((DEVICE_KINDS["virtio_mem"], str(zone["id"]), 0, None))
        balloon = config.get("balloon")
        if isinstance(balloon, dict):
            single("balloon", balloon)
        if config.get("watchdog") is True:
            plan.append((DEVICE_KINDS["watchdog"], "__watchdog", 0, None))
        listed("vdpa")
        rtc = config.get("rtc")
        if p.has_rtc and isinstance(rtc, dict):
            single("rtc", rtc)
        return plan

    def _iommu_enabled(self, config: dict[str, Any]) -> bool:
        if config.get("iommu") is True:
            return True
        platform = config.get("platform")
        if isinstance(platform, dict) and platform.get("iommu_segments") is not None:
            return True
        for key in ("disks", "net", "pmem", "vdpa", "devices"):
            for dev in config.get(key) or []:
                if isinstance(dev, dict) and dev.get("iommu") is True:
                    return True
        for key in ("rng", "console", "balloon", "rtc", "vsock"):
            dev = config.get(key)
            if isinstance(dev, dict) and dev.get("iommu") is True:
                return True
        return False

    def _build(
        self,
        config: dict[str, Any],
        action: str,
        *,
        restore_tree: DeviceTree | None = None,
        device_id_cnt: int = 0,
    ) -> _Vm:
        """``Vm::new``: validate, then create and place every device.

        Mutates ``config`` (generated ids written back); raises ApiError
        wrapped with ``action``.
        """
        p = self.profile
        try:
            boot_ids = validate(p, config)
        except ApiError as exc:
            raise exc.wrap(_API, action) from None
        nseg = num_pci_segments(config)
        self._builds += 1
        vm = _Vm(
            generation=self._builds,
            topology=PciTopology.create(nseg, host_bridge_all_segments=p.host_bridge_all_segments),
            tree=DeviceTree(),
            device_id_cnt=device_id_cnt,
            boot_ids=boot_ids,
        )
        vm.tree.add_plain("__ioapic")
        if (config.get("serial") or {}).get("mode", "Null") != "Off":
            vm.tree.add_plain("__serial")

        def place(seg: int, slot: int | None, node_id: str, reserve_phase: bool = False) -> str:
            if not 0 <= seg < len(vm.topology.segments):
                raise _err(
                    action,
                    _DM,
                    f"fakechv: CHV {p.build_version} panics here: PCI segment {seg} of "
                    f"device {node_id} does not exist (only {len(vm.topology.segments)})",
                )
            if restore_tree is not None:
                stored = restore_tree.get(node_id)
                if stored is not None and stored.pci_bdf is not None:
                    s, sl = parse_bdf(stored.pci_bdf)
                    seg, slot = s, sl
            try:
                return vm.topology.allocate(seg, slot)
            except ApiError as exc:
                raise exc.wrap(_API, action, _DM) from None

        plan = self._plan(config, vm)
        vfio_plan: list[tuple[DeviceKind, str, int, int | None]] = []
        for kind_name in ("device", "user_device"):
            kind = DEVICE_KINDS[kind_name]
            assert kind.config_key is not None
            for dev in config.get(kind.config_key) or []:
                vfio_plan.append(
                    (
                        kind,
                        str(dev.get("id") or ""),
                        int(dev.get("pci_segment", 0)),
                        self._explicit_slot(kind, dev),
                    )
                )
        # 1. reserve every explicit id
        for _kind, ident, seg, slot in [*plan, *vfio_plan]:
            if slot is None:
                continue
            if not 0 <= seg < len(vm.topology.segments):
                place(seg, slot, ident)
            try:
                vm.topology.segments[seg].reserve(slot)
            except ApiError as exc:
                raise exc.wrap(_API, action, _DM) from None
        # 2. the virtio devices in order
        for kind, ident, seg, slot in plan:
            bdf = place(seg, slot, f"_virtio-pci-{ident}")
            vm.tree.add_pci(ident, bdf, virtio=True)
            vm.kinds[ident] = kind.name
        # 3. VFIO then vfio-user (ids generated now, after the virtio ones)
        for kind_name in ("device", "user_device"):
            kind = DEVICE_KINDS[kind_name]
            assert kind.config_key is not None and kind.prefix is not None
            for dev in config.get(kind.config_key) or []:
                if dev.get("id") is None:
                    dev["id"] = self._next_name(vm, kind.prefix)
                ident = str(dev["id"])
                bdf = place(int(dev.get("pci_segment", 0)), self._explicit_slot(kind, dev), ident)
                vm.tree.add_pci(ident, bdf, virtio=False)
                vm.kinds[ident] = kind.name
        # 4. virtio-iommu last on segment 0
        if self._iommu_enabled(config):
            bdf = place(0, None, "_virtio-pci-__iommu")
            vm.tree.add_pci("__iommu", bdf, virtio=True)
            vm.kinds["__iommu"] = "iommu"
        # 5. pvpanic (and ivshmem with the ivshmem feature)
        if config.get("pvpanic") is True:
            bdf = place(0, None, "__pvpanic")
            vm.tree.add_pci("__pvpanic", bdf, virtio=False)
            vm.kinds["__pvpanic"] = "pvpanic"
        ivshmem = config.get("ivshmem")
        if "ivshmem" in p.features and isinstance(ivshmem, dict):
            kind = DEVICE_KINDS["ivshmem"]
            ident = str(ivshmem.get("id") or "__ivshmem")
            bdf = place(
                int(ivshmem.get("pci_segment", 0)), self._explicit_slot(kind, ivshmem), ident
            )
            vm.tree.add_pci(ident, bdf, virtio=False)
            vm.kinds[ident] = "ivshmem"
        return vm

    # ------------------------------------------------------------ lifecycle

    def create(self, config: dict[str, Any]) -> None:
        """vm.create: store the (deserialized) config; no validation."""
        if self.config is not None:
            raise _err("The VM could not be created", "VM is already created")
        self.config = copy.deepcopy(config)

    def boot(self) -> None:
        action = "The VM could not boot"
        if self.vm is not None and self.profile.boot_refuses_existing_vm:
            raise _err(action, "VM is already created")
        self.emit("vm", "booting")
        if self.vm is not None:  # <= v52: Vm::boot on the existing VM
            if self.vm.state == VmState.PAUSED:
                self.emit("vm", "resuming")
                self.vm.state = VmState.RUNNING
                self.emit("vm", "resumed")
                self.emit("vm", "booted")
                return
            raise _err(
                action,
                f"invalid VM state transition: {self.vm.state} to Running",
                kind=ErrorKind.INVALID_STATE,
            )
        if self.config is None:
            raise _err(action, "VM config is missing", kind=ErrorKind.MISSING_CONFIG)
        config = copy.deepcopy(self.config)
        vm = self._build(config, action)
        self.config = config
        self.vm = vm
        self.emit("vm", "booted")

    def shutdown(self) -> None:
        if self.vm is None:
            raise _err("The VM could not shutdown", "VM is not running")
        self._teardown()
        self.emit("vm", "shutdown")

    def _teardown(self) -> None:
        self._cancel_timers()
        self.vm = None

    def reboot(self) -> None:
        action = "The VM could not reboot"
        self.emit("vm", "rebooting")
        if self.vm is None or self.config is None:
            raise _err(action, "VM is not created", kind=ErrorKind.NOT_CREATED)
        self._teardown()
        config = copy.deepcopy(self.config)
        vm = self._build(config, action)
        self.config = config
        self.vm = vm
        self.emit("vm", "rebooted")

    def power_button(self) -> None:
        if self.vm is None:
            raise _err("Error triggering power button", "VM is not running")

    def nmi(self) -> None:
        if self.vm is None:
            raise _err("Error triggering NMI", "VM is not running")

    def pause(self) -> None:
        action = "The VM could not be paused"
        if self.vm is None:
            raise _err(action, "VM is not running")
        self.emit("vm", "pausing")
        if self.vm.state != VmState.RUNNING:
            raise _err(
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
            raise _err(action, "VM is not running")
        self.emit("vm", "resuming")
        if self.vm.state != VmState.PAUSED:
            raise _err(
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
        self.emit("vm", "deleted")

    def vmm_shutdown(self) -> None:
        self.delete()
        self.emit("vmm", "shutdown")

    # ------------------------------------------------------------ queries

    def info(self) -> dict[str, Any]:
        """vm.info's body."""
        if self.config is None:
            raise _err(
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
            out["device_tree"] = self.vm.tree.to_json(self.profile)
        elif self.profile.null_unset:
            out["device_tree"] = None
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        if self.vm is None:
            raise _err("The VM info is not available", "VM is not running")
        out: dict[str, dict[str, int]] = {}
        for ident, kind in self.vm.kinds.items():
            if kind in ("disk",):
                out[ident] = {"read_bytes": 0, "read_ops": 0, "write_bytes": 0, "write_ops": 0}
            elif kind in ("net",):
                out[ident] = {"rx_bytes": 0, "rx_frames": 0, "tx_bytes": 0, "tx_frames": 0}
        return out

    def bdf_of(self, device_id: str) -> str | None:
        """The BDF of a device of the booted VM (None if unknown or not booted)."""
        return self.vm.tree.bdf_of(device_id) if self.vm is not None else None

    # ------------------------------------------------------------ hotplug

    def add_device(
        self, kind_name: str, device: dict[str, Any], *, fds: int = 0
    ) -> tuple[str, str] | None:
        """vm.add-*: returns ``(id, bdf)`` on a booted VM, None when only stored."""
        kind = DEVICE_KINDS[kind_name]
        action = kind.add_error or "The device could not be added to the VM"
        key = kind.config_key
        assert key is not None
        if self.config is None:
            raise _err(action, "VM is not created", kind=ErrorKind.NOT_CREATED)
        dev = copy.deepcopy(device)
        trial = copy.deepcopy(self.config)
        if kind.name == "vsock":
            if trial.get("vsock") is not None:
                raise _err(action, "Too many virtio-vsock devices")
            trial["vsock"] = copy.deepcopy(dev)
        else:
            trial.setdefault(key, [])
            if trial[key] is None:
                trial[key] = []
            trial[key].append(copy.deepcopy(dev))
        try:
            validate(self.profile, trial)
        except ApiError as exc:
            raise exc.wrap(_API, action) from None
        if self.vm is None:
            self._append(kind, dev)
            if kind.name == "net":
                self.net_fds[str(dev.get("id", ""))] = fds
            return None
        vm = self.vm
        ident = dev.get("id")
        if ident is not None:
            if str(ident).startswith("__"):
                raise _err(action, _DM, f"Invalid identifier: {ident}")
            if ident in vm.tree:
                raise _err(action, _DM, f"Invalid identifier as it is not unique: {ident}")
        seg = int(dev.get("pci_segment", 0))
        if kind.name in _IOMMU_HOTPLUG_CHECKED and dev.get("iommu") is True:
            platform = self.config.get("platform")
            iommu_segments = (
                platform.get("iommu_segments") if isinstance(platform, dict) else None
            ) or []
            if seg not in iommu_segments:
                raise _err(action, _DM, "Cannot hotplug device behind vIOMMU")
        if ident is None:
            assert kind.prefix is not None
            ident = self._next_name(vm, kind.prefix)
            dev["id"] = ident
        ident = str(ident)
        if not 0 <= seg < len(vm.topology.segments):
            raise _err(
                action,
                _DM,
                f"fakechv: CHV {self.profile.build_version} panics here: PCI segment {seg} "
                f"of device {ident} does not exist (only {len(vm.topology.segments)})",
            )
        if kind.virtio:
            vm.tree.add_plain(ident)  # the device node exists before its slot
        try:
            bdf = vm.topology.allocate(seg, self._explicit_slot(kind, dev))
        except ApiError as exc:
            err = exc.wrap(_API, action, _DM)
            err.commit = kind.virtio
            raise err from None
        vm.tree.add_pci(ident, bdf, virtio=kind.virtio)
        vm.kinds[ident] = kind.name
        self._append(kind, dev)
        if kind.name == "net":
            self.net_fds[ident] = fds
        return ident, bdf

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
            if isinstance(net, dict) and count:
                net["fds"] = [-1] * count

    def _append(self, kind: DeviceKind, dev: dict[str, Any]) -> None:
        assert self.config is not None and kind.config_key is not None
        if kind.name == "vsock":
            self.config["vsock"] = dev
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
                raise _err(action, "VM is not created", kind=ErrorKind.NOT_CREATED)
            if not _config_remove(self.config, ident):
                raise _err(
                    action,
                    f"No device with id {_debug_str(ident)} to remove",
                    kind=ErrorKind.NO_DEVICE_TO_REMOVE,
                )
            self.net_fds.pop(ident, None)
            return
        vm = self.vm
        assert self.config is not None
        unknown = _err(
            action,
            _DM,
            f"Failed to find device corresponding to the given identifier: {ident}",
            kind=ErrorKind.UNKNOWN_DEVICE,
        )
        node = vm.tree.get(ident)
        if node is None:
            raise unknown
        pci_node = node if node.pci_bdf is not None else None
        if pci_node is None:
            pci_node = vm.tree.get(node.parent) if node.parent is not None else None
            if pci_node is None:
                raise _err(action, _DM, "Could not find the node in the device tree")
        assert pci_node.pci_bdf is not None
        device_id = pci_node.children[0] if pci_node.children else pci_node.id
        kind = DEVICE_KINDS.get(vm.kinds.get(device_id, ""))
        if kind is not None and kind.virtio and not kind.removable:
            raise _err(
                action,
                _DM,
                f"Not allowed to remove this type of device from the VM: {kind.type_name}",
            )
        removed = _config_remove(self.config, ident)
        if not removed and not self.profile.remove_retryable:
            raise unknown
        self.net_fds.pop(ident, None)
        vm.pending[device_id] = pci_node.pci_bdf
        self._schedule_eject(vm, device_id)

    def _schedule_eject(self, vm: _Vm, device_id: str) -> None:
        if self.eject.mode == "immediate":
            self._eject(vm, device_id)
        elif self.eject.mode == "delay":
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            # the timer names the VM by generation, not by object: a rejected request
            # in between rolls the VM back to a copy, which must still see the eject
            handle: asyncio.TimerHandle | None = None

            def fire() -> None:
                if handle is not None:
                    self._timers.discard(handle)
                if self.vm is not None and self.vm.generation == vm.generation:
                    if self._eject(self.vm, device_id):
                        self._ejected.add((vm.generation, device_id))

            handle = loop.call_later(self.eject.delay_ms / 1000.0, fire)
            self._timers.add(handle)

    def _eject(self, vm: _Vm, device_id: str, *, announce: bool = True) -> bool:
        if vm is not self.vm or device_id not in vm.pending:
            return False
        bdf = vm.pending.pop(device_id)
        vm.topology.free_bdf(bdf)
        vm.tree.remove_device(device_id)
        vm.kinds.pop(device_id, None)
        if announce:
            self.emit("vm", "device-removed", {"id": device_id, "bdf": bdf})
        return True

    def eject_now(self, device_id: str) -> bool:
        """Let the guest eject ``device_id`` now; False if it is not pending."""
        if self.vm is None:
            return False
        return self._eject(self.vm, device_id)

    def pending_ejects(self) -> dict[str, str]:
        """Devices removed but not yet ejected: id -> BDF."""
        return dict(self.vm.pending) if self.vm is not None else {}

    # ------------------------------------------------------------ resize

    def resize(
        self, desired_vcpus: int | None, desired_ram: int | None, desired_balloon: int | None
    ) -> None:
        if self.config is None:
            raise _err(
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
            raise _err(action, "VM is not created", kind=ErrorKind.NOT_CREATED)
        if self.vm is None:
            raise _err(action, "Failed resizing a disk image")

    def resize_zone(self, ident: str, desired_ram: int) -> None:
        action = "The memory zone could not be resized"
        if self.config is None:
            raise _err(action, "VM is not created", kind=ErrorKind.NOT_CREATED)
        if self.vm is None:
            for zone in (self.config.get("memory") or {}).get("zones") or []:
                if isinstance(zone, dict) and zone.get("id") == ident:
                    zone["size"] = desired_ram
                    return
            raise _err(action, "Failed resizing a memory zone")

    # ------------------------------------------------------------ snapshot / migration

    def export_state(self) -> dict[str, Any]:
        """What a snapshot or migration carries (config, device tree, counter)."""
        if self.vm is None or self.config is None:
            raise ValueError("no booted VM to export")
        return {
            "config": copy.deepcopy(self.config),
            "device_tree": self.vm.tree.state(),
            "device_id_cnt": self.vm.device_id_cnt,
            "vm_state": self.vm.state,
        }

    def _rebuild(self, state: dict[str, Any], action: str, vm_state: str) -> None:
        try:
            config = copy.deepcopy(state["config"])
            tree = DeviceTree.from_state(state["device_tree"])
            cnt = int(state["device_id_cnt"])
            if not isinstance(config, dict):
                raise ValueError("config is not an object")
        except (KeyError, TypeError, ValueError) as exc:
            raise _err(action, f"fakechv: malformed VM state: {exc}") from None
        vm = self._build(config, action, restore_tree=tree, device_id_cnt=cnt)
        vm.state = vm_state
        self.config = config
        self.vm = vm

    def snapshot(self, destination_url: str) -> None:
        from fakechv.snapshot import SnapshotError, write_snapshot

        action = "The VM could not be snapshotted"
        if self.vm is None:
            raise _err(action, "VM is not running")
        self.emit("vm", "snapshotting")
        if self.vm.state != VmState.PAUSED:
            raise _err(
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
            raise _err(
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
            raise _err(action, "VM is already created")
        try:
            config, state = read_snapshot(source_url)
        except SnapshotError as exc:
            raise _err(
                action,
                "Cannot restore VM",
                "Failed to send migratable component snapshot",
                *exc.messages,
            ) from None
        from fakechv.config import ConfigError, deserialize

        try:
            config = deserialize(self.profile, "VmConfig", config)
        except ConfigError as exc:
            raise _err(action, "Cannot restore VM", f"Error deserializing config: {exc}") from None
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
        action = (
            "Error receiving migration"
            if self.profile.name in ("v53", "head")
            else ("Error starting migration receiver")
        )
        if self.config is not None:
            raise _err(
                action, "Failed to receive migratable component snapshot", "VM is already created"
            )
        self._rebuild(state, action, VmState.RUNNING)

    def finish_outgoing_migration(self) -> None:
        """After a successful send the source VM is shut down (and CHV exits)."""
        self._teardown()
        self.config = None
