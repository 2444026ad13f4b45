"""The device half of one emulated CHV VM (vmm/src/device_manager.rs).

A :class:`DeviceManager` is made with each build of the VM (boot, reboot,
restore, migration) and holds what CHV's ``DeviceManager`` holds: the PCI
segments, the device tree, ``device_id_cnt`` and the devices removed but not yet
ejected. It creates the boot devices in CHV's order (:mod:`fakechv.devices`),
generates ids, reserves every explicit ``pci_device_id`` before placing anything,
places each device on its segment, hot-adds (:meth:`DeviceManager.add_device`),
removes (:meth:`DeviceManager.remove_device`) and ejects
(:meth:`DeviceManager.eject`) devices. :class:`EjectScheduler` plays the guest's
part of an eject, at the time an :class:`EjectPolicy` says.

The VM's side (validating the config, storing it, events, rollback) is
:mod:`fakechv.vmm`'s, as it is vm.rs's in CHV.

The one failure CHV leaves a trace of: when a virtio hot-add fails at slot
allocation, the device node ``<id>`` created before the allocation stays in the
device tree (and a generated id stays consumed), so a retry with the same id
fails with "Invalid identifier as it is not unique" (vmm/src/device_manager.rs
@v53.0: ``make_virtio_block_device`` inserts the node at line 2888,
``add_virtio_pci_device`` allocates the slot at 4478 and inserts the
``_virtio-pci-<id>`` node only at 4589). Such errors carry ``commit=True``.

Disk images are opened, typed and locked as CHV does (:mod:`fakechv.images`): each
disk's image is opened when its device is made (``make_virtio_block_device``: after its
id is generated, so a failed open uses the id up), locked at once when hot-added and
together at boot (:meth:`DeviceManager.lock_images`), and closed when the device is
ejected or the VM goes. A boot that fails to open a disk loses the config's whole disk
list: CHV takes it out of the config to make the disks and returns on the error before
putting it back (``make_virtio_block_devices``, device_manager.rs@v53.0:2904-2911).

Differences from real CHV that are deliberate:

* Taps and sockets are not opened: a net, fs or vhost-user back end that does not
  exist on the host is accepted (CHV would fail to create the device).
* v52 without ``platform`` accepts ``pci_segment >= 1`` at validation and then
  panics in the device manager (index out of bounds); fakechv answers 500 with
  a message saying so instead of crashing.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakechv.backends import BackendError, connect_vhost_user, open_vfio_container
from fakechv.config import remove_device_entry
from fakechv.devices import DEVICE_KINDS, DeviceKind
from fakechv.devicetree import DeviceTree
from fakechv.errors import API_ERROR, DM_ERROR, ApiError, ErrorKind, api_error, brief
from fakechv.images import DEFAULT_SIZE, Image, ImageError, Images
from fakechv.jsoncopy import copy_json
from fakechv.pci import PciTopology, parse_bdf
from fakechv.profiles import Profile

__all__ = ["EJECT_MODES", "DeviceManager", "EjectPolicy", "EjectScheduler", "realistic_eject_ms"]

#: the device manager's message and the socket key of each kind with a back end
#: (vmm/src/device_manager.rs@v53.0:191-243, 390); no socket key: the VFIO container
_BACKENDS = {
    "disk": ("Cannot create vhost-user-blk device", "vhost_socket"),
    "net": ("Cannot create vhost-user-net device", "vhost_socket"),
    "generic_vhost_user": ("Cannot create generic vhost-user device", "socket"),
    "fs": ("Cannot create virtio-fs device", "socket"),
    "device": ("Cannot create a VFIO device", ""),
}

#: ``ImageType``'s Display (block/src/lib.rs@v53.0:495)
_IMAGE_TYPE_NAMES = {
    "FixedVhd": "vhd",
    "Qcow2": "qcow2",
    "Raw": "raw",
    "Vhdx": "vhdx",
    "Unknown": "unknown",
}

#: one device to create: (kind, id, segment, explicit slot or None)
_Planned = tuple[DeviceKind, str, int, int | None]


EJECT_MODES = ("immediate", "delay", "realistic", "never")
#: the eject latencies the shared guest shows here (ms): a removed device leaves after
REALISTIC_EJECT_MS = (2400, 8000)


def realistic_eject_ms(device_id: str) -> int:
    """A delay in :data:`REALISTIC_EJECT_MS`, the same for the same device id (so a run
    repeats)."""
    low, high = REALISTIC_EJECT_MS
    digest = hashlib.sha256(device_id.encode()).digest()
    return low + int.from_bytes(digest[:4], "big") % (high - low + 1)


@dataclass
class EjectPolicy:
    """When the emulated guest ejects a device after vm.remove-device.

    ``immediate``: right away (default); ``delay``: after ``delay_ms`` on the
    running asyncio loop (without a running loop it behaves like ``never``);
    ``realistic``: like ``delay``, after 2.4-8 s as the shared guest takes on this
    machine kind (../shared/chv/README.md), the same for the same device id;
    ``never``: only through :meth:`fakechv.vmm.Vmm.eject_now`.
    """

    mode: str = "immediate"
    delay_ms: int = 0

    def __post_init__(self) -> None:
        if self.mode not in EJECT_MODES:
            raise ValueError(
                f"eject mode must be immediate, delay, realistic or never, not {brief(self.mode)}"
            )
        if isinstance(self.delay_ms, bool) or not isinstance(self.delay_ms, int):
            raise ValueError(f"eject delay_ms must be an integer, not {brief(self.delay_ms)}")
        if self.delay_ms < 0:
            raise ValueError(f"eject delay_ms must be >= 0, not {self.delay_ms}")


#: ``eject(generation, device_id, announce)``: eject a pending device of the VM
#: build ``generation`` if that build is still the VMM's; whether it did
EjectFn = Callable[[int, str, bool], bool]


class EjectScheduler:
    """The guest's part of an eject: when a removed device goes away.

    Lives as long as the VMM (not one VM build): a delayed eject names the VM by
    its build ``generation``, not by object, because a rejected request in
    between rolls the VM back to a copy, which must still see the eject.
    """

    def __init__(self, policy: EjectPolicy, eject: EjectFn) -> None:
        self.policy = policy
        self._eject = eject
        self._timers: set[asyncio.TimerHandle] = set()
        #: (generation, device id) of delayed ejects that happened: kept across a
        #: rollback, which must not bring an ejected device back
        self.ejected: set[tuple[int, str]] = set()

    def schedule(self, generation: int, device_id: str) -> None:
        """The guest was asked to eject ``device_id`` (after vm.remove-device)."""
        if self.policy.mode == "immediate":
            self._eject(generation, device_id, True)
        elif self.policy.mode in ("delay", "realistic"):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            delay_ms = self.policy.delay_ms
            if self.policy.mode == "realistic":
                delay_ms = realistic_eject_ms(device_id)
            handle: asyncio.TimerHandle | None = None

            def fire() -> None:
                if handle is not None:
                    self._timers.discard(handle)
                if self._eject(generation, device_id, True):
                    self.ejected.add((generation, device_id))

            handle = loop.call_later(delay_ms / 1000.0, fire)
            self._timers.add(handle)

    def cancel(self) -> None:
        """Drop every eject not done yet (the VM is gone)."""
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        self.ejected.clear()


def _iommu_enabled(config: dict[str, Any]) -> bool:
    if config.get("iommu") is True:
        return True
    platform = config.get("platform")
    if isinstance(platform, dict) and platform.get("iommu_segments") is not None:
        return True
    return any(
        dev.get("iommu") is True
        for kind in DEVICE_KINDS.values()
        if kind.iommu_flag
        for dev in kind.entries(config)
    )


class DeviceManager:
    """The devices of one VM build: PCI segments, device tree, id counter,
    devices awaiting eject."""

    def __init__(
        self,
        profile: Profile,
        num_segments: int,
        *,
        boot_ids: set[str],
        device_id_cnt: int = 0,
        images: Images | None = None,
    ) -> None:
        self.profile = profile
        #: opens the disk images (shared with the VMM, never copied)
        self.opener = images or Images("virtual")
        #: device id -> its open image, in creation order (CHV's ``block_devices``)
        self.images: dict[str, Image] = {}
        self.topology = PciTopology.create(
            num_segments, host_bridge_all_segments=profile.host_bridge_all_segments
        )
        self.tree = DeviceTree()
        self.device_id_cnt = device_id_cnt
        #: the explicit ids of the config: generated names skip them
        self.boot_ids = boot_ids
        #: device id -> kind name, for every device created
        self.kinds: dict[str, str] = {}
        #: device id -> BDF of devices removed but not yet ejected
        self.pending: dict[str, str] = {}

    #: the fields :meth:`__deepcopy__` knows how to copy (a new one must be added there)
    _FIELDS = frozenset(
        {"profile", "opener", "images", "topology", "tree", "device_id_cnt", "boot_ids",
         "kinds", "pending"}
    )  # fmt: skip

    def __deepcopy__(self, memo: dict[int, Any]) -> DeviceManager:
        # every request that may fail copies the manager (a checkpoint): field by field,
        # without deepcopy's reconstruction of the object and dispatch for each entry.
        # The profile and the image opener are shared; an open image copies to itself.
        if self.__dict__.keys() != self._FIELDS:
            raise AssertionError(f"DeviceManager.__deepcopy__ misses {set(self.__dict__)}")
        copied = object.__new__(DeviceManager)
        memo[id(self)] = copied
        copied.__dict__.update(
            profile=self.profile,
            opener=self.opener,
            images=dict(self.images),
            topology=PciTopology([copy.deepcopy(s, memo) for s in self.topology.segments]),
            tree=copy.deepcopy(self.tree, memo),
            device_id_cnt=self.device_id_cnt,
            boot_ids=set(self.boot_ids),
            kinds=dict(self.kinds),
            pending=dict(self.pending),
        )
        return copied

    # ------------------------------------------------------------ helpers

    def next_name(self, prefix: str) -> str:
        """``DeviceManager::next_device_name``: ``<prefix><device_id_cnt>``, skipping
        names in use; the counter is shared by all prefixes."""
        start = self.device_id_cnt
        while True:
            name = f"{prefix}{self.device_id_cnt}"
            self.device_id_cnt = (self.device_id_cnt + 1) % (2**64)
            if name not in self.boot_ids and name not in self.tree:
                return name
            if self.device_id_cnt == start:
                raise ApiError([DM_ERROR, "Failed to find an available device name"])

    def explicit_slot(self, kind: DeviceKind, dev: dict[str, Any]) -> int | None:
        """The ``pci_device_id`` of ``dev``, if its kind takes one in this release."""
        if not self.profile.accepts_pci_device_id(kind.name):
            return None
        slot = dev.get("pci_device_id")
        return int(slot) if slot is not None else None

    def _check_segment(self, seg: int, node_id: str, action: str) -> None:
        """A segment past the last: CHV v52's device manager indexes out of bounds and
        its VMM thread panics (device_manager.rs@v52.0:4499); the error says so in the
        log, the API answers as CHV's does (:data:`fakechv.errors.PANIC_ANSWER`)."""
        if not 0 <= seg < len(self.topology.segments):
            err = api_error(
                action,
                DM_ERROR,
                f"fakechv: CHV {self.profile.build_version} panics here: PCI segment {seg} "
                f"of device {node_id} does not exist (only {len(self.topology.segments)})",
            )
            err.panic = True
            raise err

    def bdf_of(self, device_id: str) -> str | None:
        return self.tree.bdf_of(device_id)

    def _device_resources(self, kind: DeviceKind, ident: str, config: dict[str, Any]) -> None:
        """The resources of a device node: a pmem device's memory range
        (``make_virtio_pmem_device`` records the mapping as MmioAddressRange)."""
        if kind.name != "pmem":
            return
        dev = next((d for d in kind.entries(config) if str(d.get("id")) == ident), None)
        node = self.tree.get(ident)
        if dev is None or node is None:
            return
        size = dev.get("size")
        if not isinstance(size, int):
            try:
                size = os.path.getsize(str(dev.get("file")))
            except (OSError, TypeError, ValueError):
                size = DEFAULT_SIZE
        # above the 64-bit BARs, one range per segment and slot (the same after a
        # restore or migration, which keep the BDF)
        seg, slot = parse_bdf(self.tree.bdf_of(ident) or "0000:00:00.0")
        base = (1 << 41) + (seg << 36) + (slot << 30)
        node.resources = [{"MmioAddressRange": {"base": base, "size": size}}]

    # ------------------------------------------------------------ disk images

    def open_image(self, ident: str, dev: dict[str, Any], action: str) -> Image | None:
        """Open the image of disk ``dev`` (``make_virtio_block_device``) and write the
        detected type into its config; None for a vhost-user disk."""
        if dev.get("vhost_user") is True:
            return None
        path = dev.get("path")
        if path is None:
            raise api_error(action, DM_ERROR, "No disk path was specified when one was expected")
        try:
            image = self.opener.open(
                str(path),
                readonly=dev.get("readonly") is True,
                direct=dev.get("direct") is True,
                granularity=str(dev.get("lock_granularity") or "ByteRange"),
            )
        except ImageError as exc:
            raise api_error(action, DM_ERROR, "Cannot open disk path", *exc.messages) from None
        specified = dev.get("image_type") or "Unknown"
        if specified == "Unknown":
            dev["image_type"] = image.image_type
        elif specified != image.image_type:
            image.close()
            raise api_error(
                action,
                DM_ERROR,
                "Disk image type does not match expected type: specified = "
                f"{_IMAGE_TYPE_NAMES.get(specified, specified)}, "
                f"detected = {_IMAGE_TYPE_NAMES.get(image.image_type, image.image_type)}",
            )
        self.images[ident] = image
        return image

    def net_macs(self, net: dict[str, Any]) -> None:
        """What ``make_virtio_net_device`` writes into a net's config: a random ``mac``
        for one without (head; the releases draw it at vm.create) and the MAC of the tap
        it opened, ``host_mac`` (not head)."""
        if net.get("vhost_user") is True:
            return
        if self.profile.net_mac_at_boot and net.get("mac") is None:
            net["mac"] = ":".join(f"{b:02x}" for b in bytes([0x2E]) + os.urandom(5))
        if self.profile.reports_host_mac and net.get("host_mac") is None:
            # the kernel's random MAC of a new tap; here derived from the net, so that
            # a run's answers repeat (the differential takes any host_mac as a tap's)
            seed = hashlib.sha256(f"{net.get('id')}/{net.get('mac')}".encode()).digest()
            first = (seed[0] & 0xFC) | 0x02
            net["host_mac"] = ":".join(f"{b:02x}" for b in bytes([first]) + seed[1:6])

    def check_backend(self, kind: DeviceKind, dev: dict[str, Any], action: str) -> None:
        """Under the ``check`` images mode: the back end CHV reaches first when it makes
        this device must be there (:mod:`fakechv.backends`)."""
        if self.opener.mode != "check":
            return
        what, socket_key = _BACKENDS.get(kind.name, ("", ""))
        if kind.name in ("disk", "net"):
            if dev.get("vhost_user") is not True:
                return
        elif not what:
            return
        try:
            if socket_key:
                connect_vhost_user(str(dev.get(socket_key) or ""))
            else:
                open_vfio_container()
        except BackendError as exc:
            messages = exc.messages
            if socket_key and self.profile.vhost_user_missing:
                messages = list(self.profile.vhost_user_missing)
            raise api_error(action, DM_ERROR, what, *messages) from None

    def lock_images(self, action: str, *, strict: bool = True) -> None:
        """``try_lock_disks``: lock every disk image, in creation order. ``strict``
        False (a restored or migrated VM): an image another holder still has is left
        unlocked (CHV's receiver takes it once the sender has let go)."""
        for image in self.images.values():
            if image.locked:
                continue
            try:
                image.lock()
            except ImageError as exc:
                if strict:
                    raise api_error(
                        action,
                        "Error locking disk images: Another instance likely holds a lock",
                        "Cannot lock images of all block devices",
                        *exc.messages,
                    ) from None

    def close_images(self) -> None:
        """The VM is gone: every image is closed (and unlocked)."""
        for image in self.images.values():
            image.close()
        self.images.clear()

    # ------------------------------------------------------------ boot devices

    def _plan(self, config: dict[str, Any], action: str) -> list[_Planned]:
        """The virtio devices in creation order: (kind, id, segment, explicit slot).
        Generates missing ids (written back into ``config``)."""
        p = self.profile
        plan: list[_Planned] = []

        def single(kind_name: str, dev: dict[str, Any]) -> None:
            kind = DEVICE_KINDS[kind_name]
            if not kind.known_by(p):
                return
            if kind.prefix is not None:  # a generated id, written back
                if dev.get("id") is None:
                    dev["id"] = self.next_name(kind.prefix)
                ident = str(dev["id"])
            else:
                assert kind.fixed_id is not None
                ident = str((dev.get("id") if kind.has_pci_common(p) else None) or kind.fixed_id)
            plan.append(
                (kind, ident, int(dev.get("pci_segment", 0)), self.explicit_slot(kind, dev))
            )

        def listed(kind_name: str) -> None:
            kind = DEVICE_KINDS[kind_name]
            assert kind.config_key is not None and kind.prefix is not None
            if not kind.known_by(p):
                return
            # the list is taken out of the config while its devices are made and not
            # put back after an error, except generic vhost-user's, a copy
            before = copy_json(config.get(kind.config_key))
            for dev in config.get(kind.config_key) or []:
                if dev.get("id") is None:
                    dev["id"] = self.next_name(kind.prefix)
                try:
                    self.check_backend(kind, dev, action)
                    if kind.name == "disk":
                        self.open_image(str(dev["id"]), dev, action)
                    elif kind.name == "net":
                        self.net_macs(dev)
                except ApiError:
                    keep = kind.name == "generic_vhost_user"
                    config[kind.config_key] = before if keep else None
                    raise
                plan.append(
                    (
                        kind,
                        str(dev["id"]),
                        int(dev.get("pci_segment", 0)),
                        self.explicit_slot(kind, dev),
                    )
                )

        console = config.get("console") or {"mode": "Tty"}
        if console.get("mode") != "Off":
            single("console", console)
        listed("disk")
        listed("net")
        single("rng", config.get("rng") or {"src": "/dev/urandom"})
        listed("generic_vhost_user")
        listed("fs")
        listed("pmem")
        vsock = config.get("vsock")
        if isinstance(vsock, dict):
            single("vsock", vsock)
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
        if isinstance(rtc, dict):
            single("rtc", rtc)
        return plan

    def create_devices(
        self, config: dict[str, Any], action: str, *, restore_tree: DeviceTree | None = None
    ) -> None:
        """``DeviceManager::create_devices``: create and place every device of the
        (validated) ``config``, in CHV's order. Generated ids are written back into
        ``config``; a restored or migrated VM (``restore_tree``) keeps the BDFs
        recorded there. Raises ApiError wrapped with ``action``."""
        p = self.profile
        self.tree.add_plain("__ioapic")
        if (config.get("serial") or {}).get("mode", "Null") != "Off":
            self.tree.add_plain("__serial")

        def place(seg: int, slot: int | None, node_id: str) -> str:
            self._check_segment(seg, node_id, action)
            if restore_tree is not None:
                stored = restore_tree.get(node_id)
                if stored is not None and stored.pci_bdf is not None:
                    s, sl = parse_bdf(stored.pci_bdf)
                    seg, slot = s, sl
            try:
                return self.topology.allocate(seg, slot)
            except ApiError as exc:
                raise exc.wrap(API_ERROR, action, DM_ERROR) from None

        plan = self._plan(config, action)
        vfio_plan: list[_Planned] = []
        for kind_name in ("device", "user_device"):
            kind = DEVICE_KINDS[kind_name]
            assert kind.config_key is not None
            for dev in config.get(kind.config_key) or []:
                vfio_plan.append(
                    (
                        kind,
                        str(dev.get("id") or ""),
                        int(dev.get("pci_segment", 0)),
                        self.explicit_slot(kind, dev),
                    )
                )
        # 1. reserve every explicit id
        for _kind, ident, seg, slot in [*plan, *vfio_plan]:
            if slot is None:
                continue
            self._check_segment(seg, ident, action)
            try:
                self.topology.segments[seg].reserve(slot)
            except ApiError as exc:
                raise exc.wrap(API_ERROR, action, DM_ERROR) from None
        # 2. the virtio devices in order
        for kind, ident, seg, slot in plan:
            bdf = place(seg, slot, f"_virtio-pci-{ident}")
            self.tree.add_pci(ident, bdf, virtio=True, bar64=seg > 0 or kind.name != "disk")
            self.kinds[ident] = kind.name
            self._device_resources(kind, ident, config)
        # 3. VFIO then vfio-user (ids generated now, after the virtio ones)
        for kind_name in ("device", "user_device"):
            kind = DEVICE_KINDS[kind_name]
            assert kind.config_key is not None and kind.prefix is not None
            for dev in config.get(kind.config_key) or []:
                if dev.get("id") is None:
                    dev["id"] = self.next_name(kind.prefix)
                try:
                    self.check_backend(kind, dev, action)
                except ApiError:
                    config[kind.config_key] = None  # taken, as the virtio lists
                    raise
                ident = str(dev["id"])
                bdf = place(int(dev.get("pci_segment", 0)), self.explicit_slot(kind, dev), ident)
                self.tree.add_pci(ident, bdf, virtio=False)
                self.kinds[ident] = kind.name
        # 4. virtio-iommu last on segment 0
        if _iommu_enabled(config):
            bdf = place(0, None, "_virtio-pci-__iommu")
            self.tree.add_pci("__iommu", bdf, virtio=True)
            self.kinds["__iommu"] = "iommu"
        # 5. pvpanic (and ivshmem with the ivshmem feature)
        if config.get("pvpanic") is True:
            bdf = place(0, None, "__pvpanic")
            self.tree.add_pci("__pvpanic", bdf, virtio=False)
            self.kinds["__pvpanic"] = "pvpanic"
        ivshmem = config.get("ivshmem")
        kind = DEVICE_KINDS["ivshmem"]
        if kind.known_by(p) and isinstance(ivshmem, dict):
            ident = str(ivshmem.get("id") or kind.fixed_id)
            bdf = place(
                int(ivshmem.get("pci_segment", 0)), self.explicit_slot(kind, ivshmem), ident
            )
            self.tree.add_pci(ident, bdf, virtio=kind.virtio)
            self.kinds[ident] = kind.name

    # ------------------------------------------------------------ hotplug

    def add_device(
        self, kind: DeviceKind, dev: dict[str, Any], config: dict[str, Any], action: str
    ) -> tuple[str, str]:
        """``DeviceManager::add_*``: hot-add ``dev`` (already validated as part of
        ``config``, which it is not in yet) and return ``(id, bdf)``. A generated
        id is written into ``dev``. A failed slot allocation of a virtio device
        leaves its node behind (``commit=True``, see the module doc)."""
        ident = dev.get("id")
        if ident is not None:
            if str(ident).startswith("__"):
                raise api_error(action, DM_ERROR, f"Invalid identifier: {ident}")
            if ident in self.tree:
                raise api_error(
                    action, DM_ERROR, f"Invalid identifier as it is not unique: {ident}"
                )
        seg = int(dev.get("pci_segment", 0))
        if kind.hotplug_iommu_check and dev.get("iommu") is True:
            platform = config.get("platform")
            iommu_segments = (
                platform.get("iommu_segments") if isinstance(platform, dict) else None
            ) or []
            if seg not in iommu_segments:
                raise api_error(action, DM_ERROR, "Cannot hotplug device behind vIOMMU")
        if ident is None:
            assert kind.prefix is not None
            ident = self.next_name(kind.prefix)
            dev["id"] = ident
        ident = str(ident)
        self._check_segment(seg, ident, action)
        bdf: str | None = None
        if not kind.virtio and kind.name in _BACKENDS:
            # a VFIO device takes its slot (pci_resources) before it opens the container,
            # and a failure leaves the slot taken (add_vfio_device,
            # vmm/src/device_manager.rs@v53.0:4007-4080, v52.0:3814-3880; real v52, v53
            # and head all do so)
            bdf = self._allocate(kind, seg, dev, action)
        try:
            self.check_backend(kind, dev, action)
        except ApiError as exc:
            exc.commit = True  # the generated id (and a VFIO device's slot) stays used
            raise
        if kind.name == "net":
            self.net_macs(dev)
        if kind.name == "disk":
            try:
                image = self.open_image(ident, dev, action)
                if image is not None:  # a hot-added image is locked at once
                    try:
                        image.lock()
                    except ImageError as exc:
                        image.close()
                        del self.images[ident]
                        raise api_error(
                            action,
                            DM_ERROR,
                            "Cannot lock images of all block devices",
                            *exc.messages,
                        ) from None
            except ApiError as exc:
                exc.commit = True  # the generated id stays used
                raise
        if kind.virtio:
            self.tree.add_plain(ident)  # the device node exists before its slot
        if bdf is None:
            bdf = self._allocate(kind, seg, dev, action)
        self.tree.add_pci(ident, bdf, virtio=kind.virtio)
        self.kinds[ident] = kind.name
        self._device_resources(kind, ident, {kind.config_key or "": [dev]})
        return ident, bdf

    def _allocate(self, kind: DeviceKind, seg: int, dev: dict[str, Any], action: str) -> str:
        """A slot for a hot-added device; a virtio device's node stays behind when
        there is none (``commit``)."""
        try:
            return self.topology.allocate(seg, self.explicit_slot(kind, dev))
        except ApiError as exc:
            err = exc.wrap(API_ERROR, action, DM_ERROR)
            err.commit = kind.virtio
            raise err from None

    def remove_device(self, ident: str, config: dict[str, Any], action: str) -> str:
        """``DeviceManager::remove_device``: check the device can go, drop its
        config entry, and mark its PCI device as awaiting the guest's eject.
        Returns the id of the device to eject."""
        text = "Failed to find device corresponding to the given identifier"
        if self.profile.unknown_device_names_id:
            text += f": {ident}"
        unknown = api_error(action, DM_ERROR, text, kind=ErrorKind.UNKNOWN_DEVICE)
        node = self.tree.get(ident)
        if node is None:
            raise unknown
        pci_node = node if node.pci_bdf is not None else None
        if pci_node is None:
            pci_node = self.tree.get(node.parent) if node.parent is not None else None
            if pci_node is None:
                raise api_error(action, DM_ERROR, "Could not find the node in the device tree")
        assert pci_node.pci_bdf is not None
        device_id = pci_node.children[0] if pci_node.children else pci_node.id
        kind = DEVICE_KINDS.get(self.kinds.get(device_id, ""))
        if kind is not None and kind.virtio and not kind.removable:
            raise api_error(
                action,
                DM_ERROR,
                f"Not allowed to remove this type of device from the VM: {kind.type_name}",
            )
        removed = remove_device_entry(config, ident)
        if not removed and not self.profile.remove_retryable:
            raise unknown
        self.pending[device_id] = pci_node.pci_bdf
        return device_id

    def eject(self, device_id: str) -> str | None:
        """``DeviceManager::eject_device``: the guest let go of a removed device:
        free its slot and drop it from the tree. Its BDF, or None if it is not
        awaiting eject."""
        if device_id not in self.pending:
            return None
        bdf = self.pending.pop(device_id)
        image = self.images.pop(device_id, None)
        if image is not None:
            image.close()
        self.topology.free_bdf(bdf)
        self.tree.remove_device(device_id)
        self.kinds.pop(device_id, None)
        return bdf
