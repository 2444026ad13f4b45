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

from dataclasses import dataclass

from fakechv.profiles import Profile

__all__ = [
    "ADD_ENDPOINTS",
    "BOOT_VIRTIO_ORDER",
    "DEVICE_KINDS",
    "DeviceKind",
    "kinds_for",
]


@dataclass(frozen=True)
class DeviceKind:
    """One kind of device."""

    name: str
    #: key in VmConfig ("disks"), or None for devices with no config entry
    config_key: str | None
    #: whether the config entry is a list
    is_list: bool
    #: generated-id prefix ("_disk") for list devices, else None
    prefix: str | None
    #: fixed id ("__rng") of single devices
    fixed_id: str | None
    #: virtio device: tree node ``_virtio-pci-<id>`` with a child ``<id>``
    virtio: bool
    removable: bool
    #: the VirtioDeviceType name in "Not allowed to remove this type of device"
    type_name: str
    #: spec schema of one config entry
    schema: str
    #: add endpoint and its ApiError message
    add_endpoint: str | None = None
    add_error: str | None = None
    #: generated ids are written back into the config list
    write_back_id: bool = False


DEVICE_KINDS: dict[str, DeviceKind] = {
    k.name: k
    for k in [
        DeviceKind(
            "console", "console", False, None, "__console", True, False, "console", "ConsoleConfig"
        ),
        DeviceKind(
            "disk",
            "disks",
            True,
            "_disk",
            None,
            True,
            True,
            "block",
            "DiskConfig",
            "vm.add-disk",
            "The disk could not be added to the VM",
            True,
        ),
        DeviceKind(
            "net",
            "net",
            True,
            "_net",
            None,
            True,
            True,
            "net",
            "NetConfig",
            "vm.add-net",
            "The network device could not be added to the VM",
            True,
        ),
        DeviceKind("rng", "rng", False, None, "__rng", True, False, "rng", "RngConfig"),
        DeviceKind(
            "generic_vhost_user",
            "generic_vhost_user",
            True,
            "_generic_vhost_user",
            None,
            True,
            False,
            "UNKNOWN",
            "GenericVhostUserConfig",
            "vm.add-generic-vhost-user",
            "The generic vhost-user device could not be added to the VM",
            True,
        ),
        DeviceKind(
            "fs",
            "fs",
            True,
            "_fs",
            None,
            True,
            True,
            "fs",
            "FsConfig",
            "vm.add-fs",
            "The fs could not be added to the VM",
            True,
        ),
        DeviceKind(
            "pmem",
            "pmem",
            True,
            "_pmem",
            None,
            True,
            True,
            "pmem",
            "PmemConfig",
            "vm.add-pmem",
            "The pmem device could not be added to the VM",
            True,
        ),
        DeviceKind(
            "vsock",
            "vsock",
            False,
            "_vsock",
            None,
            True,
            True,
            "vsock",
            "VsockConfig",
            "vm.add-vsock",
            "The vsock device could not be added to the VM",
            True,
        ),
        DeviceKind("virtio_mem", None, True, None, None, True, False, "mem", "MemoryZoneConfig"),
        DeviceKind(
            "balloon", "balloon", False, None, "__balloon", True, False, "balloon", "BalloonConfig"
        ),
        DeviceKind("watchdog", "watchdog", False, None, "__watchdog", True, False, "watchdog", ""),
        DeviceKind(
            "vdpa",
            "vdpa",
            True,
            "_vdpa",
            None,
            True,
            True,
            "net",
            "VdpaConfig",
            "vm.add-vdpa",
            "The vDPA device could not be added to the VM",
            True,
        ),
        DeviceKind("rtc", "rtc", False, None, "__rtc", True, False, "rtc", "RtcConfig"),
        DeviceKind(
            "device",
            "devices",
            True,
            "_vfio",
            None,
            False,
            True,
            "vfio",
            "DeviceConfig",
            "vm.add-device",
            "The device could not be added to the VM",
            True,
        ),
        DeviceKind(
            "user_device",
            "user_devices",
            True,
            "_vfio_user",
            None,
            False,
            True,
            "vfio-user",
            "UserDeviceConfig",
            "vm.add-user-device",
            "The user device could not be added to the VM",
            True,
        ),
        DeviceKind("iommu", None, False, None, "__iommu", True, False, "iommu", ""),
        DeviceKind("pvpanic", "pvpanic", False, None, "__pvpanic", False, False, "pvpanic", ""),
        DeviceKind(
            "ivshmem", "ivshmem", False, None, "__ivshmem", False, False, "ivshmem", "IvshmemConfig"
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
    out = []
    for k in DEVICE_KINDS.values():
        if k.name == "generic_vhost_user" and not profile.has_generic_vhost_user:
            continue
        if k.name == "rtc" and not profile.has_rtc:
            continue
        if k.name == "ivshmem" and "ivshmem" not in profile.features:
            continue
        out.append(k)
    return out
