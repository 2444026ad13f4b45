"""The device kinds CHV knows, where they live in VmConfig and how they are named.

Boot creation order (vmm/src/device_manager.rs ``make_virtio_devices`` and
``add_pci_devices``; chv-pci-rules.md section 2):

1. virtio list, each a virtio-pci device: console (unless mode ``Off``) ->
   disks -> net -> rng (always; default src /dev/urandom) -> generic vhost-user
   (v52+) -> fs -> pmem -> vsock -> virtio-mem -> balloon -> watchdog -> vdpa ->
   rtc (v53+);
2. every explicit ``pci_device_id`` is Reserved, then the virtio list is plugged
   in order, then VFIO ``devices``, vfio-user ``user_devices``, ``__iommu`` (last,
   segment 0, implicit);
3. pvpanic and ivshmem afterwards.

Generated ids come from one counter shared by all prefixes. The removable
kinds are those of ``DeviceManager::remove_device``: VFIO, vfio-user and virtio
net/block/pmem/fs/vsock; vdpa and generic vhost-user take the type of their
backend, which fakechv cannot know: they are treated as removable
net-like (vdpa) and not removable (generic vhost-user, reported as "UNKNOWN").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fakechv.profiles import Profile

__all__ = [
    "ADD_ENDPOINTS",
    "BOOT_VIRTIO_ORDER",
    "DEVICE_KINDS",
    "VHOST_USER_NEEDS_SHARED_MEMORY",
    "DeviceKind",
    "kinds_for",
]

VHOST_USER_NEEDS_SHARED_MEMORY = "Using vhost-user requires using shared memory or huge pages"


def _always(profile: Profile) -> bool:
    return True


@dataclass(frozen=True)
class DeviceKind:
    """One kind of device, and what fakechv does differently for it."""

    name: str
    #: key in VmConfig ("disks"), or None for devices with no config entry
    config_key: str | None
    #: the VirtioDeviceType name in "Not allowed to remove this type of device"
    type_name: str
    #: spec schema of one config entry ("" if it has none)
    schema: str = ""
    #: virtio device: tree node ``_virtio-pci-<id>`` with a child ``<id>``
    virtio: bool = True
    #: ``DeviceManager::remove_device`` takes it
    removable: bool = False
    #: one per VM: the config entry is one object (or a flag), not a list
    single: bool = False
    #: generated-id prefix ("_disk"); generated ids are written back into the config
    prefix: str | None = None
    #: fixed id ("__rng") of a single device without a generated id
    fixed_id: str | None = None
    #: add endpoint and its ApiError message
    add_endpoint: str | None = None
    add_error: str | None = None
    #: the error of an add when the VM already has its one device (single kinds)
    too_many_error: str | None = None
    #: ``DeviceManager::add_*`` refuses ``iommu: true`` off the IOMMU segments
    hotplug_iommu_check: bool = False
    #: an entry with ``iommu: true`` puts a virtio-iommu in the VM
    iommu_flag: bool = False
    #: the fds sent with its add request are its taps (vm.info shows one -1 each)
    takes_fds: bool = False
    #: its vm.counters names (always 0: no guest runs)
    counters: tuple[str, ...] = ()
    #: the validation error when it is configured without shared memory
    needs_shared_memory: str | None = None
    #: an entry with ``vhost_user: true`` needs shared memory
    vhost_user_option: bool = False
    #: whether a release knows the kind
    known_by: Callable[[Profile], bool] = field(default=_always, compare=False)
    #: whether a release gives the kind's config ``id``/``pci_segment``/``pci_device_id``
    has_pci_common: Callable[[Profile], bool] = field(default=_always, compare=False)

    def entries(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        """The kind's config entries in ``config`` (objects only)."""
        if self.config_key is None:
            return []
        value = config.get(self.config_key)
        if self.single:
            return [value] if isinstance(value, dict) else []
        return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []


DEVICE_KINDS: dict[str, DeviceKind] = {
    k.name: k
    for k in [
        DeviceKind(
            name="console",
            config_key="console",
            type_name="console",
            schema="ConsoleConfig",
            single=True,
            fixed_id="__console",
            iommu_flag=True,
            has_pci_common=lambda p: p.rng_console_have_id,
        ),
        DeviceKind(
            name="disk",
            config_key="disks",
            type_name="block",
            schema="DiskConfig",
            removable=True,
            prefix="_disk",
            add_endpoint="vm.add-disk",
            add_error="The disk could not be added to the VM",
            hotplug_iommu_check=True,
            iommu_flag=True,
            counters=(
                "read_bytes",
                "read_ops",
                "write_bytes",
                "write_ops",
                "read_latency_min",
                "read_latency_max",
                "read_latency_avg",
                "write_latency_min",
                "write_latency_max",
                "write_latency_avg",
            ),
            vhost_user_option=True,
        ),
        DeviceKind(
            name="net",
            config_key="net",
            type_name="net",
            schema="NetConfig",
            removable=True,
            prefix="_net",
            add_endpoint="vm.add-net",
            add_error="The network device could not be added to the VM",
            hotplug_iommu_check=True,
            iommu_flag=True,
            takes_fds=True,
            counters=("rx_bytes", "rx_frames", "tx_bytes", "tx_frames"),
            vhost_user_option=True,
        ),
        DeviceKind(
            name="rng",
            config_key="rng",
            type_name="rng",
            schema="RngConfig",
            single=True,
            fixed_id="__rng",
            iommu_flag=True,
            has_pci_common=lambda p: p.rng_console_have_id,
        ),
        DeviceKind(
            name="generic_vhost_user",
            config_key="generic_vhost_user",
            type_name="UNKNOWN",
            schema="GenericVhostUserConfig",
            prefix="_generic_vhost_user",
            add_endpoint="vm.add-generic-vhost-user",
            add_error="The generic vhost-user device could not be added to the VM",
            needs_shared_memory=VHOST_USER_NEEDS_SHARED_MEMORY,
            known_by=lambda p: p.has_generic_vhost_user,
        ),
        DeviceKind(
            name="fs",
            config_key="fs",
            type_name="fs",
            schema="FsConfig",
            removable=True,
            prefix="_fs",
            add_endpoint="vm.add-fs",
            add_error="The fs could not be added to the VM",
            needs_shared_memory=VHOST_USER_NEEDS_SHARED_MEMORY,
        ),
        DeviceKind(
            name="pmem",
            config_key="pmem",
            type_name="pmem",
            schema="PmemConfig",
            removable=True,
            prefix="_pmem",
            add_endpoint="vm.add-pmem",
            add_error="The pmem device could not be added to the VM",
            hotplug_iommu_check=True,
            iommu_flag=True,
        ),
        DeviceKind(
            name="vsock",
            config_key="vsock",
            type_name="vsock",
            schema="VsockConfig",
            removable=True,
            single=True,
            prefix="_vsock",
            add_endpoint="vm.add-vsock",
            add_error="The vsock device could not be added to the VM",
            too_many_error="Too many virtio-vsock devices",
            hotplug_iommu_check=True,
            iommu_flag=True,
        ),
        DeviceKind(
            name="virtio_mem",
            config_key=None,
            type_name="mem",
            schema="MemoryZoneConfig",
        ),
        DeviceKind(
            name="balloon",
            config_key="balloon",
            type_name="balloon",
            schema="BalloonConfig",
            single=True,
            fixed_id="__balloon",
            iommu_flag=True,
        ),
        DeviceKind(
            name="watchdog",
            config_key="watchdog",
            type_name="watchdog",
            single=True,
            fixed_id="__watchdog",
        ),
        DeviceKind(
            name="vdpa",
            config_key="vdpa",
            type_name="net",
            schema="VdpaConfig",
            removable=True,
            prefix="_vdpa",
            add_endpoint="vm.add-vdpa",
            add_error="The vDPA device could not be added to the VM",
            hotplug_iommu_check=True,
            iommu_flag=True,
        ),
        DeviceKind(
            name="rtc",
            config_key="rtc",
            type_name="rtc",
            schema="RtcConfig",
            single=True,
            fixed_id="__rtc",
            iommu_flag=True,
            known_by=lambda p: p.has_rtc,
        ),
        DeviceKind(
            name="device",
            config_key="devices",
            type_name="vfio",
            schema="DeviceConfig",
            virtio=False,
            removable=True,
            prefix="_vfio",
            add_endpoint="vm.add-device",
            add_error="The device could not be added to the VM",
            hotplug_iommu_check=True,
            iommu_flag=True,
        ),
        DeviceKind(
            name="user_device",
            config_key="user_devices",
            type_name="vfio-user",
            schema="UserDeviceConfig",
            virtio=False,
            removable=True,
            prefix="_vfio_user",
            add_endpoint="vm.add-user-device",
            add_error="The user device could not be added to the VM",
            needs_shared_memory="Using user devices requires using shared memory or huge pages",
        ),
        DeviceKind(
            name="iommu",
            config_key=None,
            type_name="iommu",
            single=True,
            fixed_id="__iommu",
        ),
        DeviceKind(
            name="pvpanic",
            config_key="pvpanic",
            type_name="pvpanic",
            virtio=False,
            single=True,
            fixed_id="__pvpanic",
        ),
        DeviceKind(
            name="ivshmem",
            config_key="ivshmem",
            type_name="ivshmem",
            schema="IvshmemConfig",
            virtio=False,
            single=True,
            fixed_id="__ivshmem",
            known_by=lambda p: "ivshmem" in p.features,
        ),
    ]
}

#: virtio devices in boot creation order
BOOT_VIRTIO_ORDER: tuple[str, ...] = (
    "console",
    "disk",
    "net",
    "rng",
    "generic_vhost_user",
    "fs",
    "pmem",
    "vsock",
    "virtio_mem",
    "balloon",
    "watchdog",
    "vdpa",
    "rtc",
)

#: add endpoint name -> device kind name
ADD_ENDPOINTS: dict[str, str] = {
    k.add_endpoint: k.name for k in DEVICE_KINDS.values() if k.add_endpoint is not None
}


def kinds_for(profile: Profile) -> list[DeviceKind]:
    """The kinds ``profile``'s CHV knows (generic vhost-user v52+, rtc v53+;
    ivshmem only with the non-default ``ivshmem`` feature)."""
    return [k for k in DEVICE_KINDS.values() if k.known_by(profile)]
