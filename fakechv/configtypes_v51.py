"""CHV v51.0's VmConfig types as serde sees them (``vmm/src/vm_config.rs@v51.0``), as a
patch of v52.0's (:mod:`fakechv.configtypes_v52`)."""

from __future__ import annotations

from fakechv.configtypes_v52 import V52
from fakechv.configtypes_v53 import CPUS_DEFAULT, MEMORY_DEFAULT
from fakechv.typemodel import RANDOM_MAC, F, S, TypeDef, release, without

__all__ = ["V51"]

# --------------------------------------------------------------------------- v51.0
# vmm/src/vm_config.rs@v51.0 (00e106e5), as a patch of v52.0 (no skip_serializing_none
# either). No PciDeviceCommonConfig yet: each device has its own iommu/id/pci_segment
# (plain fields, iommu always written), and no pci_device_id.
V51: dict[str, TypeDef] = release(
    V52,
    remove=[
        "CoreScheduling",
        "LockGranularityChoice",
        "PciDeviceCommonConfig",
        "GenericVhostUserConfig",
        "CommonConsoleConfig",
        "SerialConfig",
        "TimeoutStrategy",
        "MemoryRestoreMode",
    ],
    replace=[
        # :60
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
            skip_none=False,
        ),
        # :105
        S(
            "PlatformConfig",
            F("num_pci_segments", "u16", 1),
            F("iommu_segments", "Option<Vec<u16>>", None),
            F("iommu_address_width_bits", "u8", 64),
            F("serial_number", "Option<String>", None),
            F("uuid", "Option<String>", None),
            F("oem_strings", "Option<Vec<String>>", None),
            skip_none=False,
        ),
        # :143
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
            skip_none=False,
        ),
        # :255
        S(
            "DiskConfig",
            F("path", "Option<PathBuf>"),
            F("readonly", "bool", False),
            F("direct", "bool", False),
            F("iommu", "bool", False),
            F("num_queues", "usize", 1),
            F("queue_size", "u16", 128),
            F("vhost_user", "bool", False),
            F("vhost_socket", "Option<String>"),
            F("rate_limit_group", "Option<String>", None),
            F("rate_limiter_config", "Option<RateLimiterConfig>", None),
            F("id", "Option<String>", None),
            F("disable_io_uring", "bool", False),
            F("disable_aio", "bool", False),
            F("pci_segment", "u16", 0),
            F("serial", "Option<String>", None),
            F("queue_affinity", "Option<Vec<VirtQueueAffinity>>", None),
            F("backing_files", "bool", False),
            F("sparse", "bool", True),
            F("image_type", "ImageType", "Unknown"),
            skip_none=False,
        ),
        # :322
        S(
            "NetConfig",
            F("tap", "Option<String>", None),
            F("ip", "Option<IpAddr>"),  # CUSTOM
            F("mask", "Option<IpAddr>"),  # CUSTOM
            F("mac", "MacAddr", RANDOM_MAC),  # CUSTOM
            F("host_mac", "Option<MacAddr>", None),  # CUSTOM
            F("mtu", "Option<u16>", None),
            F("iommu", "bool", False),
            F("num_queues", "usize", 2),
            F("queue_size", "u16", 256),
            F("vhost_user", "bool", False),
            F("vhost_socket", "Option<String>"),
            F("vhost_mode", "VhostMode", "Client"),
            F("id", "Option<String>", None),
            F("fds", "Option<Fds>", None),  # CUSTOM: deserialize_with
            F("rate_limiter_config", "Option<RateLimiterConfig>", None),
            F("pci_segment", "u16", 0),
            F("offload_tso", "bool", True),
            F("offload_ufo", "bool", True),
            F("offload_csum", "bool", True),
            skip_none=False,
        ),
        # :406
        S(
            "RngConfig",
            F("src", "PathBuf"),
            F("iommu", "bool", False),
            skip_none=False,
        ),
        # :447
        S(
            "FsConfig",
            F("tag", "String"),
            F("socket", "PathBuf"),
            F("num_queues", "usize", 1),
            F("queue_size", "u16", 1024),
            F("id", "Option<String>", None),
            F("pci_segment", "u16", 0),
            skip_none=False,
        ),
        # :476
        S(
            "PmemConfig",
            F("file", "PathBuf"),
            F("size", "Option<u64>", None),
            F("iommu", "bool", False),
            F("discard_writes", "bool", False),
            F("id", "Option<String>", None),
            F("pci_segment", "u16", 0),
            skip_none=False,
        ),
        # :509 (file: default_consoleconfig_file = None)
        S(
            "ConsoleConfig",
            F("file", "Option<PathBuf>", None),
            F("mode", "ConsoleOutputMode"),
            F("iommu", "bool", False),
            F("socket", "Option<PathBuf>"),
            skip_none=False,
        ),
        # :565
        S(
            "DeviceConfig",
            F("path", "PathBuf"),
            F("iommu", "bool", False),
            F("id", "Option<String>", None),
            F("pci_segment", "u16", 0),
            F("x_nv_gpudirect_clique", "Option<u8>", None),
            skip_none=False,
        ),
        # :595
        S(
            "UserDeviceConfig",
            F("socket", "PathBuf"),
            F("id", "Option<String>", None),
            F("pci_segment", "u16", 0),
            skip_none=False,
        ),
        # :611
        S(
            "VdpaConfig",
            F("path", "PathBuf"),
            F("num_queues", "usize", 1),
            F("iommu", "bool", False),
            F("id", "Option<String>", None),
            F("pci_segment", "u16", 0),
            skip_none=False,
        ),
        # :635
        S(
            "VsockConfig",
            F("cid", "u32"),
            F("socket", "PathBuf"),
            F("iommu", "bool", False),
            F("id", "Option<String>", None),
            F("pci_segment", "u16", 0),
            skip_none=False,
        ),
        # :915 (serial: default_serial, console: default_console)
        S(
            "VmConfig",
            F("cpus", "CpusConfig", without(CPUS_DEFAULT, "profile", "core_scheduling")),
            F("memory", "MemoryConfig", without(MEMORY_DEFAULT, "reserve")),
            F("payload", "Option<PayloadConfig>"),
            F("rate_limit_groups", "Option<Vec<RateLimiterGroupConfig>>"),
            F("disks", "Option<Vec<DiskConfig>>"),
            F("net", "Option<Vec<NetConfig>>"),
            F("rng", "RngConfig", {"src": "/dev/urandom", "iommu": False}),
            F("balloon", "Option<BalloonConfig>"),
            F("fs", "Option<Vec<FsConfig>>"),
            F("pmem", "Option<Vec<PmemConfig>>"),
            F("serial", "ConsoleConfig", {"mode": "Null", "iommu": False}),
            F("console", "ConsoleConfig", {"mode": "Tty", "iommu": False}),
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
        # api/mod.rs@v51.0:266
        S(
            "VmSendMigrationData",
            F("destination_url", "String"),
            F("local", "bool", False),
            skip_none=False,
        ),
        # config.rs@v51.0:2366
        S(
            "RestoreConfig",
            F("source_url", "PathBuf"),
            F("prefault", "bool", False),
            F("net_fds", "Option<Vec<RestoredNetConfig>>", None),
            skip_none=False,
        ),
    ],
)
