"""CHV v53.0's VmConfig types as serde sees them (``vmm/src/vm_config.rs@v53.0``): the
table the other releases' tables patch (:mod:`fakechv.configtypes`), and the structs'
``Default`` values the older releases take in part."""

from __future__ import annotations

from collections.abc import Iterable

from fakechv.typemodel import RANDOM_MAC, E, F, S, TypeDef

__all__ = ["CPUS_DEFAULT", "MEMORY_DEFAULT", "V53"]

#: CpusConfig::default (vm_config.rs@v53.0:98): DEFAULT_VCPUS 1, DEFAULT_MAX_PHYS_BITS 46
CPUS_DEFAULT = {
    "boot_vcpus": 1,
    "max_vcpus": 1,
    "kvm_hyperv": False,
    "max_phys_bits": 46,
    "features": {"amx": False},
    "nested": True,
    "core_scheduling": "Vm",
    "profile": "Host",
}
#: MemoryConfig::default (vm_config.rs@v53.0:327): size ``DEFAULT_MEMORY_MB << 20``
MEMORY_DEFAULT = {
    "size": 512 << 20,
    "mergeable": False,
    "hotplug_method": "Acpi",
    "shared": False,
    "hugepages": False,
    "prefault": False,
    "reserve": False,
    "thp": True,
}


def _index(types: Iterable[TypeDef]) -> dict[str, TypeDef]:
    return {t.name: t for t in types}


# --------------------------------------------------------------------------- v53.0
# vmm/src/vm_config.rs@v53.0 (9ed824d6). Line numbers are into that file unless
# another file is named; each is the line of the ``pub struct``/``pub enum``.
V53: dict[str, TypeDef] = _index(
    [
        # :35
        S(
            "CpuAffinity",
            F("vcpu", "u32"),
            F("host_cpus", "Box<[usize]>"),
            skip_none=False,
        ),
        # :41 (amx is cfg(target_arch = "x86_64"))
        S("CpuFeatures", F("amx", "bool", False), skip_none=False),
        # :48
        E("CoreScheduling", "Vm", "Vcpu", "Off", default="Vm"),
        # :56
        S(
            "CpuTopology",
            F("threads_per_core", "u16"),
            F("cores_per_die", "u16"),
            F("dies_per_package", "u16"),
            F("packages", "u16"),
            skip_none=False,
        ),
        # arch/src/x86_64/cpu_profile/mod.rs:26
        E("CpuProfile", "Host", default="Host"),
        # :74 (max_phys_bits: default_cpuconfig_max_phys_bits = 46;
        # nested: default_cpusconfig_nested = true)
        S(
            "CpusConfig",
            F("boot_vcpus", "u32"),
            F("max_vcpus", "u32"),
            F("topology", "Option<CpuTopology>", None),
            F("kvm_hyperv", "bool", False),
            F("max_phys_bits", "u8", 46),
            F("affinity", "Option<Box<[CpuAffinity]>>", None),
            F("features", "CpuFeatures", {"amx": False}),
            F("nested", "bool", True),
            F("core_scheduling", "CoreScheduling", "Vm"),
            F("profile", "CpuProfile", "Host"),
        ),
        # :131 (tdx, sev_snp: non-default features, left out)
        S(
            "PlatformConfig",
            F("num_pci_segments", "u16", 1),
            F("iommu_segments", "Option<Box<[u16]>>", None),
            F("iommu_address_width_bits", "u8", 64),
            F("system_serial_number", "Option<String>", None, alias="serial_number"),
            F("system_uuid", "Option<String>", None, alias="uuid"),
            F("oem_strings", "Option<Box<[String]>>", None),
            F("system_manufacturer", "Option<String>", None),
            F("system_product_name", "Option<String>", None),
            F("system_version", "Option<String>", None),
            F("system_family", "Option<String>", None),
            F("system_sku_number", "Option<String>", None),
            F("chassis_asset_tag", "Option<String>", None),
            F("iommufd", "bool", False),
            F("iommufd_fd", "Option<Fd>", None),  # CUSTOM: deserialize_with
            F("vfio_p2p_dma", "bool", True),
        ),
        # :237 (default_pci_segment_aperture_weight = 1)
        S(
            "PciSegmentConfig",
            F("pci_segment", "u16", 0),
            F("mmio32_aperture_weight", "u32", 1),
            F("mmio64_aperture_weight", "u32", 1),
            skip_none=False,
        ),
        # :248
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
            F("reserve", "bool", False),
            F("mergeable", "bool", False),
        ),
        # :283
        E("HotplugMethod", "Acpi", "VirtioMem", default="Acpi"),
        # :299 (thp: default_memoryconfig_thp = true)
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
            F("reserve", "bool", False),
            F("zones", "Option<Vec<MemoryZoneConfig>>", None),
            F("thp", "bool", True),
        ),
        # :347
        E("VhostMode", "Client", "Server", default="Client"),
        # :354 (RateLimiterConfig::default: both buckets None)
        S(
            "RateLimiterGroupConfig",
            F("id", "String", ""),
            F("rate_limiter_config", "RateLimiterConfig", {}),
            skip_none=False,
        ),
        # :362
        S(
            "VirtQueueAffinity",
            F("queue_index", "u16"),
            F("host_cpus", "Box<[usize]>"),
            skip_none=False,
        ),
        # :369
        S(
            "PciDeviceCommonConfig",
            F("id", "Option<String>", None),
            F("iommu", "bool", False, skip_false=True),
            F("pci_segment", "u16", 0),
            F("pci_device_id", "Option<u8>", None),
        ),
        # :382 (num_queues: default_diskconfig_num_queues = 1; queue_size:
        # default_diskconfig_queue_size = 128; sparse: default_diskconfig_sparse = true)
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
            F("queue_affinity", "Option<Box<[VirtQueueAffinity]>>", None),
            F("backing_files", "bool", False),
            F("sparse", "bool", True),
            F("image_type", "ImageType", "Unknown"),
            F("lock_granularity", "LockGranularityChoice", "ByteRange"),
        ),
        # block/src/lib.rs:486
        E("ImageType", "FixedVhd", "Qcow2", "Raw", "Vhdx", "Unknown", default="Unknown"),
        # block/src/io/fcntl.rs:150
        E("LockGranularityChoice", "ByteRange", "Full", default="ByteRange"),
        # virtio-devices/src/lib.rs:151
        S(
            "TokenBucketConfig",
            F("size", "u64"),
            F("one_time_burst", "Option<u64>"),
            F("refill_time", "u64"),
            skip_none=False,
        ),
        # virtio-devices/src/lib.rs:159 (CUSTOM: deny_unknown_fields)
        S(
            "RateLimiterConfig",
            F("bandwidth", "Option<TokenBucketConfig>"),
            F("ops", "Option<TokenBucketConfig>"),
            skip_none=False,
            deny_unknown=True,
        ),
        # :448 (tap: default_netconfig_tap = None; mac: default_netconfig_mac, random;
        # num_queues: default_netconfig_num_queues = 2; queue_size:
        # default_netconfig_queue_size = 256; offload_*: default_netconfig_true)
        S(
            "NetConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("tap", "Option<String>", None),
            F("ip", "Option<IpAddr>"),  # CUSTOM
            F("mask", "Option<IpAddr>"),  # CUSTOM
            F("mac", "MacAddr", RANDOM_MAC),  # CUSTOM
            F("host_mac", "Option<MacAddr>", None),  # CUSTOM
            F("mtu", "Option<u16>", None),
            F("num_queues", "usize", 2),
            F("queue_size", "u16", 256),
            F("vhost_user", "bool", False),
            F("vhost_socket", "Option<String>"),
            F("vhost_mode", "VhostMode", "Client"),
            F("fds", "Option<Fds>", None),  # CUSTOM: deserialize_with
            F("rate_limiter_config", "Option<RateLimiterConfig>", None),
            F("offload_tso", "bool", True),
            F("offload_ufo", "bool", True),
            F("offload_csum", "bool", True),
        ),
        # :528
        S(
            "RngConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("src", "PathBuf"),
            skip_none=False,
        ),
        # :548
        S(
            "RtcConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            skip_none=False,
        ),
        # :562
        S(
            "BalloonConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("size", "u64"),
            F("deflate_on_oom", "bool", False),
            F("free_page_reporting", "bool", False),
            skip_none=False,
        ),
        # :579 (default_fsconfig_num_queues = 1, default_fsconfig_queue_size = 1024)
        S(
            "FsConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("tag", "String"),
            F("socket", "PathBuf"),
            F("num_queues", "usize", 1),
            F("queue_size", "u16", 1024),
            skip_none=False,
        ),
        # :606
        S(
            "GenericVhostUserConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("socket", "PathBuf"),
            F("queue_sizes", "Vec<u16>"),
            F("device_type", "u32"),
            skip_none=False,
        ),
        # :623
        S(
            "PmemConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("file", "PathBuf"),
            F("size", "Option<u64>", None),
            F("discard_writes", "bool", False),
        ),
        # :642
        E("ConsoleOutputMode", "Off", "Pty", "Tty", "File", "Socket", "Null"),
        # :656
        S(
            "CommonConsoleConfig",
            F("file", "Option<PathBuf>", None),
            F("mode", "ConsoleOutputMode"),
            F("socket", "Option<PathBuf>", None),
        ),
        # :682
        S(
            "SerialConfig",
            F("common", "CommonConsoleConfig", flatten=True),
            skip_none=False,
        ),
        # :711
        S(
            "ConsoleConfig",
            F("common", "CommonConsoleConfig", flatten=True),
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            skip_none=False,
        ),
        # :744 (cfg(target_arch = "x86_64"))
        S(
            "DebugConsoleConfig",
            F("file", "Option<PathBuf>", None),
            F("mode", "ConsoleOutputMode"),
            F("iobase", "Option<u16>"),
        ),
        # :778
        S(
            "DeviceConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("path", "Option<PathBuf>", None),
            F("fd", "Option<Fd>", None),  # CUSTOM: deserialize_with
            F("x_nv_gpudirect_clique", "Option<u8>", None),
            F("x_exclude_mmap_bars", "Vec<u64>", []),
        ),
        # :830
        S(
            "UserDeviceConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("socket", "PathBuf"),
            skip_none=False,
        ),
        # :844 (default_vdpaconfig_num_queues = 1)
        S(
            "VdpaConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("path", "PathBuf"),
            F("num_queues", "usize", 1),
            skip_none=False,
        ),
        # :864
        S(
            "VsockConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("cid", "u32"),
            F("socket", "PathBuf"),
            skip_none=False,
        ),
        # :907
        S(
            "NumaDistance",
            F("destination", "u32", 0),
            F("distance", "u8", 0),
            skip_none=False,
        ),
        # :916
        S(
            "NumaConfig",
            F("guest_numa_id", "u32"),
            F("cpus", "Option<Box<[u32]>>", None),
            F("distances", "Option<Box<[NumaDistance]>>", None),
            F("memory_zones", "Option<Box<[String]>>", None),
            F("pci_segments", "Option<Box<[u16]>>", None),
            F("device_id", "Option<String>", None),
        ),
        # :969 (igvm, host_data, fw_cfg_config: non-default features, left out)
        S(
            "PayloadConfig",
            F("firmware", "Option<PathBuf>", None),
            F("kernel", "Option<PathBuf>", None),
            F("cmdline", "Option<String>", None),
            F("initramfs", "Option<PathBuf>", None),
        ),
        # :1130
        S("TpmConfig", F("socket", "PathBuf"), skip_none=False),
        # :1142
        S(
            "LandlockConfig",
            F("path", "PathBuf"),
            F("access", "String"),
            skip_none=False,
        ),
        # :1156 (pvmemcontrol, gdb, ivshmem: non-default features, left out;
        # debug_console is cfg(target_arch = "x86_64"), its default iobase is
        # debug_console::DEFAULT_PORT 0xe9; rng, serial, console: their Default impls)
        S(
            "VmConfig",
            F("cpus", "CpusConfig", CPUS_DEFAULT),
            F("memory", "MemoryConfig", MEMORY_DEFAULT),
            F("payload", "Option<PayloadConfig>"),
            F("rate_limit_groups", "Option<Box<[RateLimiterGroupConfig]>>"),
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
            F("numa", "Option<Box<[NumaConfig]>>"),
            F("watchdog", "bool", False),
            F("rtc", "Option<RtcConfig>", None),
            F("pci_segments", "Option<Box<[PciSegmentConfig]>>"),
            F("platform", "Option<PlatformConfig>"),
            F("tpm", "Option<TpmConfig>"),
            F("preserved_fds", "Option<HashSet<i32>>", None, skip=True),
            F("landlock_enable", "bool", False),
            F("landlock_rules", "Option<Box<[LandlockConfig]>>"),
        ),
        # ------------------------------------------------ request bodies, vmm/src/api/mod.rs
        # api/mod.rs:239 (vm.resize)
        S(
            "VmResizeData",
            F("desired_vcpus", "Option<u32>"),
            F("desired_ram", "Option<u64>"),
            F("desired_balloon", "Option<u64>"),
            skip_none=False,
        ),
        # api/mod.rs:246 (vm.resize-disk)
        S(
            "VmResizeDiskData",
            F("id", "String"),
            F("desired_size", "u64"),
            skip_none=False,
        ),
        # api/mod.rs:252 (vm.resize-zone)
        S(
            "VmResizeZoneData",
            F("id", "String"),
            F("desired_ram", "u64"),
            skip_none=False,
        ),
        # api/mod.rs:258 (vm.remove-device)
        S("VmRemoveDeviceData", F("id", "String"), skip_none=False),
        # api/mod.rs:263 (vm.snapshot)
        S("VmSnapshotConfig", F("destination_url", "String"), skip_none=False),
        # api/mod.rs:276
        E("MigrationMode", "Precopy", "Postcopy", default="Precopy"),
        # api/mod.rs:301 (vm.receive-migration)
        S(
            "VmReceiveMigrationData",
            F("receiver_url", "String"),
            F("tls_dir", "Option<PathBuf>", None),
            F("memory_mode", "MigrationMode", "Precopy"),
            skip_none=False,
        ),
        # api/mod.rs:401
        E("TimeoutStrategy", "Cancel", "Ignore", default="Cancel"),
        # api/mod.rs:437 (vm.send-migration; DEFAULT_DOWNTIME 300 ms,
        # DEFAULT_TIMEOUT 3600 s, default_connections 1)
        S(
            "VmSendMigrationData",
            F("destination_url", "String"),
            F("local", "bool", False),
            F("downtime_ms", "NonZeroU64", 300),  # CUSTOM
            F("timeout_s", "NonZeroU64", 3600),  # CUSTOM
            F("timeout_strategy", "TimeoutStrategy", "Cancel"),
            F("connections", "NonZeroU32", 1),  # CUSTOM
            F("tls_dir", "Option<PathBuf>", None),
            F("memory_mode", "MigrationMode", "Precopy"),
            skip_none=False,
        ),
        # ------------------------------------------------ vm.restore, vmm/src/config.rs
        # config.rs:2745
        S(
            "RestoredNetConfig",
            F("id", "String"),
            F("num_fds", "usize", 0),
            F("fds", "Option<Fds>", None),  # CUSTOM: deserialize_with
            skip_none=False,
        ),
        # config.rs:2779
        E("MemoryRestoreMode", "Copy", "OnDemand", default="Copy"),
        # config.rs:2806
        S(
            "RestoreConfig",
            F("source_url", "PathBuf"),
            F("prefault", "bool", False),
            F("memory_restore_mode", "MemoryRestoreMode", "Copy"),
            F("net_fds", "Option<Vec<RestoredNetConfig>>", None),
            F("resume", "bool", False),
            skip_none=False,
        ),
    ]
)
