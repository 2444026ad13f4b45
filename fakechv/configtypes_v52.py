"""CHV v52.0's VmConfig types as serde sees them (``vmm/src/vm_config.rs@v52.0``), as a
patch of v53.0's (:mod:`fakechv.configtypes_v53`)."""

from __future__ import annotations

import dataclasses

from fakechv.configtypes_v53 import CPUS_DEFAULT, MEMORY_DEFAULT, V53
from fakechv.typemodel import F, S, StructDef, TypeDef, release, without

__all__ = ["V52"]


def _without_skip_none(defs: dict[str, TypeDef]) -> list[TypeDef]:
    """Every struct of ``defs`` as a release without ``skip_serializing_none`` has it."""
    return [
        dataclasses.replace(t, skip_none=False) for t in defs.values() if isinstance(t, StructDef)
    ]


# --------------------------------------------------------------------------- v52.0
# vmm/src/vm_config.rs@v52.0 (1314ac88). v52.0 has no #[serde_with::skip_serializing_none]
# anywhere: every unset Option is written as null (VmInfoResponse too).
V52: dict[str, TypeDef] = release(
    release(V53, replace=_without_skip_none(V53)),
    remove=[
        "CpuProfile",  # arch/src/x86_64/cpu_profile is new in v53.0
        "RtcConfig",
        "MigrationMode",
    ],
    replace=[
        # :69
        S(
            "CpusConfig",
            F("boot_vcpus", "u32"),
            F("max_vcpus", "u32"),
            F("topology", "Option<CpuTopology>", None),
            F("kvm_hyperv", "bool", False),
            F("max_phys_bits", "u8", 46),
            F("affinity", "Option<Vec<CpuAffinity>>", None),
            F("features", "CpuFeatures", {"amx": False}),
            F("nested", "bool", True),
            F("core_scheduling", "CoreScheduling", "Vm"),
            skip_none=False,
        ),
        # :31
        S(
            "CpuAffinity",
            F("vcpu", "u32"),
            F("host_cpus", "Vec<usize>"),
            skip_none=False,
        ),
        # :121
        S(
            "PlatformConfig",
            F("num_pci_segments", "u16", 1),
            F("iommu_segments", "Option<Vec<u16>>", None),
            F("iommu_address_width_bits", "u8", 64),
            F("serial_number", "Option<String>", None),
            F("uuid", "Option<String>", None),
            F("oem_strings", "Option<Vec<String>>", None),
            F("iommufd", "bool", False),
            F("vfio_p2p_dma", "bool", True),
            skip_none=False,
        ),
        # :163
        S(
            "MemoryZoneConfig",
            F("id", "String"),
            F("size", "u64"),
            F("file", "Option<PathBuf>", None),
            F("shared", "bool", False),
            F("hugepages", "bool", False),
            F("hugepage_size", "Option<u64>", None),
            F("host_numa_node", "Option<u32>", None),
            F("hotplug_size", "Option<u64>", None),
            F("hotplugged_size", "Option<u64>", None),
            F("prefault", "bool", False),
            F("mergeable", "bool", False),
            skip_none=False,
        ),
        # :211
        S(
            "MemoryConfig",
            F("size", "u64"),
            F("mergeable", "bool", False),
            F("hotplug_method", "HotplugMethod", "Acpi"),
            F("hotplug_size", "Option<u64>", None),
            F("hotplugged_size", "Option<u64>", None),
            F("shared", "bool", False),
            F("hugepages", "bool", False),
            F("hugepage_size", "Option<u64>", None),
            F("prefault", "bool", False),
            F("zones", "Option<Vec<MemoryZoneConfig>>", None),
            F("thp", "bool", True),
            skip_none=False,
        ),
        # :271
        S(
            "VirtQueueAffinity",
            F("queue_index", "u16"),
            F("host_cpus", "Vec<usize>"),
            skip_none=False,
        ),
        # :289
        S(
            "DiskConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("path", "Option<PathBuf>"),
            F("readonly", "bool", False),
            F("direct", "bool", False),
            F("num_queues", "usize", 1),
            F("queue_size", "u16", 128),
            F("vhost_user", "bool", False),
            F("vhost_socket", "Option<String>"),
            F("rate_limit_group", "Option<String>", None),
            F("rate_limiter_config", "Option<RateLimiterConfig>", None),
            F("disable_io_uring", "bool", False),
            F("disable_aio", "bool", False),
            F("serial", "Option<String>", None),
            F("queue_affinity", "Option<Vec<VirtQueueAffinity>>", None),
            F("backing_files", "bool", False),
            F("sparse", "bool", True),
            F("image_type", "ImageType", "Unknown"),
            F("lock_granularity", "LockGranularityChoice", "ByteRange"),
            skip_none=False,
        ),
        # :462
        S(
            "BalloonConfig",
            F("size", "u64"),
            F("deflate_on_oom", "bool", False),
            F("free_page_reporting", "bool", False),
            skip_none=False,
        ),
        # :672
        S(
            "DeviceConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("path", "PathBuf"),
            F("x_nv_gpudirect_clique", "Option<u8>", None),
            F("x_exclude_mmap_bars", "Vec<u64>", []),
            skip_none=False,
        ),
        # :782
        S(
            "NumaConfig",
            F("guest_numa_id", "u32"),
            F("cpus", "Option<Vec<u32>>", None),
            F("distances", "Option<Vec<NumaDistance>>", None),
            F("memory_zones", "Option<Vec<String>>", None),
            F("pci_segments", "Option<Vec<u16>>", None),
            F("device_id", "Option<String>", None),
            skip_none=False,
        ),
        # :1017
        S(
            "VmConfig",
            F("cpus", "CpusConfig", without(CPUS_DEFAULT, "profile")),
            F("memory", "MemoryConfig", without(MEMORY_DEFAULT, "reserve")),
            F("payload", "Option<PayloadConfig>"),
            F("rate_limit_groups", "Option<Vec<RateLimiterGroupConfig>>"),
            F("disks", "Option<Vec<DiskConfig>>"),
            F("net", "Option<Vec<NetConfig>>"),
            F("rng", "RngConfig", {"iommu": False, "pci_segment": 0, "src": "/dev/urandom"}),
            F("balloon", "Option<BalloonConfig>"),
            F("generic_vhost_user", "Option<Vec<GenericVhostUserConfig>>"),
            F("fs", "Option<Vec<FsConfig>>"),
            F("pmem", "Option<Vec<PmemConfig>>"),
            F("serial", "SerialConfig", {"mode": "Null"}),
            F("console", "ConsoleConfig", {"mode": "Tty", "iommu": False, "pci_segment": 0}),
            F("debug_console", "DebugConsoleConfig", {"mode": "Off", "iobase": 0xE9}),
            F("devices", "Option<Vec<DeviceConfig>>"),
            F("user_devices", "Option<Vec<UserDeviceConfig>>"),
            F("vdpa", "Option<Vec<VdpaConfig>>"),
            F("vsock", "Option<VsockConfig>"),
            F("pvpanic", "bool", False),
            F("iommu", "bool", False),
            F("numa", "Option<Vec<NumaConfig>>"),
            F("watchdog", "bool", False),
            F("pci_segments", "Option<Vec<PciSegmentConfig>>"),
            F("platform", "Option<PlatformConfig>"),
            F("tpm", "Option<TpmConfig>"),
            F("preserved_fds", "Option<Vec<i32>>", None, skip=True),
            F("landlock_enable", "bool", False),
            F("landlock_rules", "Option<Vec<LandlockConfig>>"),
            skip_none=False,
        ),
        # api/mod.rs@v52.0:269
        S("VmReceiveMigrationData", F("receiver_url", "String"), skip_none=False),
        # api/mod.rs@v52.0:310
        S(
            "VmSendMigrationData",
            F("destination_url", "String"),
            F("local", "bool", False),
            F("downtime_ms", "NonZeroU64", 300),  # CUSTOM
            F("timeout_s", "NonZeroU64", 3600),  # CUSTOM
            F("timeout_strategy", "TimeoutStrategy", "Cancel"),
            F("connections", "NonZeroU32", 1),  # CUSTOM
            skip_none=False,
        ),
    ],
)
