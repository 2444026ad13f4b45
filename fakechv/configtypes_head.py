"""The VmConfig types of CHV's upstream main (HEAD) as serde sees them, as a patch of
v53.0's (:mod:`fakechv.configtypes_v53`)."""

from __future__ import annotations

from fakechv.configtypes_v53 import V53
from fakechv.typemodel import E, F, S, TypeDef, release

__all__ = ["HEAD"]

# --------------------------------------------------------------------------- HEAD
# upstream main at ae44c2971 (v53.0 + 246 commits), as a patch of v53.0.
HEAD: dict[str, TypeDef] = release(
    V53,
    replace=[
        # vm_config.rs@ae44c2971:448 (mac: Option<MacAddr>, #[serde(default)])
        S(
            "NetConfig",
            F("pci_common", "PciDeviceCommonConfig", flatten=True),
            F("tap", "Option<String>", None),
            F("ip", "Option<IpAddr>"),  # CUSTOM
            F("mask", "Option<IpAddr>"),  # CUSTOM
            F("mac", "Option<MacAddr>", None),  # CUSTOM
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
        # block/src/lib.rs@ae44c2971:488
        E(
            "ImageType",
            "FlatVmdk",
            "FixedVhd",
            "Qcow2",
            "Raw",
            "Vhdx",
            "Unknown",
            default="Unknown",
        ),
        # api/mod.rs@ae44c2971:304
        S(
            "VmReceiveMigrationData",
            F("receiver_url", "String"),
            F("tls_dir", "Option<PathBuf>", None),
            F("memory_mode", "MigrationMode", "Precopy"),
            F("vfio_fds", "Option<Vec<RestoredVfioConfig>>", None),
            F("iommufd_fd", "Option<Fd>", None),  # CUSTOM: deserialize_with
            F("zone_updates", "Vec<VmMemoryZoneUpdateData>", []),
            skip_none=False,
        ),
        # api/mod.rs@ae44c2971:587
        S(
            "VmSendMigrationData",
            F("destination_url", "String"),
            F("local", "bool", False),
            F("preserve_source", "bool", False),
            F("downtime_ms", "NonZeroU64", 300),  # CUSTOM
            F("timeout_s", "NonZeroU64", 3600),  # CUSTOM
            F("timeout_strategy", "TimeoutStrategy", "Cancel"),
            F("connections", "NonZeroU32", 1),  # CUSTOM
            F("tls_dir", "Option<PathBuf>", None),
            F("memory_mode", "MigrationMode", "Precopy"),
            skip_none=False,
        ),
        # config.rs@ae44c2971:2816
        S(
            "VmMemoryZoneUpdateData",
            F("id", "String"),
            F("host_numa_node", "u32"),
            skip_none=False,
        ),
        # config.rs@ae44c2971:2824
        S(
            "RestoredVfioConfig",
            F("id", "String"),
            F("fd", "Option<Fd>", None),  # CUSTOM: deserialize_with
            skip_none=False,
        ),
        # config.rs@ae44c2971:2844
        S(
            "RestoreConfig",
            F("source_url", "PathBuf"),
            F("prefault", "bool", False),
            F("memory_restore_mode", "MemoryRestoreMode", "Copy"),
            F("net_fds", "Option<Vec<RestoredNetConfig>>", None),
            F("vfio_fds", "Option<Vec<RestoredVfioConfig>>", None),
            F("iommufd_fd", "Option<Fd>", None),  # CUSTOM: deserialize_with
            F("resume", "bool", False),
            F("zone_updates", "Vec<VmMemoryZoneUpdateData>", []),
            skip_none=False,
        ),
    ],
)
