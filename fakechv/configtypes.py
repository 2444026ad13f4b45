"""The Rust types CHV reads and writes its VmConfig with, per release.

CHV's official OpenAPI spec is not the whole truth about its configuration: the
source (``vmm/src/vm_config.rs``) has fields the spec does not list, other
integer widths, defaults the spec does not give, flattened structs and aliases.
This module describes those types as serde sees them, release by release, so
that fakechv refuses what CHV refuses (with serde's message) and reports in
``vm.info`` what CHV reports, in CHV's field order:

* :func:`S` declares a struct: its fields in declaration order (what serde
  derive iterates), and whether unset options are left out when it is written
  (``#[serde_with::skip_serializing_none]``; without it they are ``null``);
* :func:`F` declares a field: its serde name, its Rust type as written in the
  source (``Option<Box<[u16]>>``, ``PathBuf``, ``MacAddr``, a struct or enum
  name), its ``#[serde(default)]`` (the value it takes; :data:`REQUIRED` when
  there is none), ``flatten``, ``alias`` and the ``skip_serializing_if`` of a
  ``false`` bool;
* :func:`E` declares a unit-variant enum and its ``#[default]`` variant.

Releases are built from v53.0 by patches (:func:`release`; v51.0 patches v52.0).
Every entry cites the source line it was read from; types whose Deserialize is
hand-written are described by their closest plain type and listed under CUSTOM.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fakechv.serde import (
    NO_DEFAULT,
    AnyValue,
    Bool,
    Custom,
    Enum,
    Field,
    Float,
    Int,
    MapOf,
    Opt,
    Ref,
    Seq,
    SerdeError,
    Str,
    Struct,
    Type,
)

__all__ = [
    "RELEASES",
    "REQUIRED",
    "E",
    "F",
    "FieldDef",
    "S",
    "StructDef",
    "TypeModel",
    "model",
]

#: the ``default`` of a field without ``#[serde(default)]``
REQUIRED: Any = NO_DEFAULT
#: ``default_netconfig_mac``: CHV draws a random MAC for a net without one
RANDOM_MAC = "<random mac>"


@dataclass(frozen=True)
class FieldDef:
    name: str
    rust: str
    default: Any = REQUIRED
    flatten: bool = False
    alias: tuple[str, ...] = ()
    #: ``skip_serializing_if = "<&bool as std::ops::Not>::not"``: false is left out
    skip_false: bool = False
    #: ``#[serde(skip)]``: neither read nor written
    skip: bool = False


@dataclass(frozen=True)
class StructDef:
    name: str
    fields: tuple[FieldDef, ...]
    #: ``#[serde_with::skip_serializing_none]``: unset options are left out
    skip_none: bool = True
    #: ``#[serde(deny_unknown_fields)]``
    deny_unknown: bool = False


@dataclass(frozen=True)
class EnumDef:
    name: str
    variants: tuple[str, ...]
    default: str | None = None


def F(
    name: str,
    rust: str,
    default: Any = REQUIRED,
    *,
    flatten: bool = False,
    alias: str | Iterable[str] = (),
    skip_false: bool = False,
    skip: bool = False,
) -> FieldDef:
    aliases = (alias,) if isinstance(alias, str) else tuple(alias)
    return FieldDef(name, rust, default, flatten, aliases, skip_false, skip)


def S(
    name: str, *fields: FieldDef, skip_none: bool = True, deny_unknown: bool = False
) -> StructDef:
    return StructDef(name, tuple(fields), skip_none, deny_unknown)


def E(name: str, *variants: str, default: str | None = None) -> EnumDef:
    return EnumDef(name, tuple(variants), default)


TypeDef = StructDef | EnumDef


def release(
    base: dict[str, TypeDef],
    *,
    replace: Iterable[TypeDef] = (),
    remove: Iterable[str] = (),
) -> dict[str, TypeDef]:
    out = dict(base)
    for name in remove:
        out.pop(name, None)
    for t in replace:
        out[t.name] = t
    return out


# --------------------------------------------------------------------------- custom
# CUSTOM: types whose Deserialize is hand-written; the tables name them (MacAddr,
# IpAddr, NonZeroU64, NonZeroU32, Fd, Fds) and :data:`_CUSTOM` below models them.
# What CHV does, and what it says when it refuses (checked against the v52.0, v53.0
# and HEAD binaries; a custom error carries no position of its own, so it gets the
# position of the end of the object that holds the field, its closing brace read):
#
# * ``MacAddr`` (net_util/src/mac.rs:116, the same v51.0..HEAD; NetConfig.mac,
#   NetConfig.host_mac), described as ``String``: ``String::deserialize`` first (a
#   non-string is "invalid type: integer `1`, expected a string"), then
#   ``MacAddr::parse_str``: exactly six ``:``-separated fields of exactly two hex
#   digits, either case. Anything else is the custom error
#   "The provided MAC address is invalid: parsing of {s} into a MAC address failed"
#   ({s} the decoded string, unescaped). Written back by ``Display``: lowercase
#   ``{:02x}:{:02x}:...`` (``"Aa:bB:CC:DD:EE:FF"`` is reported ``"aa:bb:cc:dd:ee:ff"``).
#   ``default_netconfig_mac`` (v51.0..v53.0) is ``MacAddr::local_random()``: random
#   bytes with the first set to ``0x2e`` (``2e:xx:xx:xx:xx:xx``; :data:`RANDOM_MAC`
#   in the tables). At HEAD ``mac`` is ``Option<MacAddr>`` with default None, and
#   vm.info leaves it out when none was given.
# * ``std::net::IpAddr`` (NetConfig.ip, NetConfig.mask), described as
#   ``Option<String>``: serde's impl for a human-readable format reads a str with a
#   visitor expecting "IP address" (a non-string is "invalid type: integer `1`,
#   expected IP address", "invalid type: sequence, expected IP address", ...); a
#   string Rust's parser refuses (IPv4 with a leading zero ``01.2.3.4``, an IPv6
#   zone ``fe80::1%eth0``, surrounding blanks, ``1.2.3``) is the custom error
#   "invalid IP address syntax". Written back by ``Display``:
#   IPv6 lowercase and compressed (``"0:0:0:0:0:0:0:1"`` -> ``"::1"``,
#   ``"FFFF:FFFF::"`` -> ``"ffff:ffff::"``), IPv4-mapped kept dotted
#   (``"::ffff:1.2.3.4"``).
# * ``deserialize_with`` FD fields: NetConfig.fds (``Option<Vec<i32>>``),
#   DeviceConfig.fd (v53.0+, ``Option<i32>``), PlatformConfig.iommufd_fd (v53.0+,
#   ``Option<i32>``), RestoredNetConfig.fds, and at HEAD RestoredVfioConfig.fd,
#   RestoreConfig.iommufd_fd, VmReceiveMigrationData.iommufd_fd: read as the plain
#   type (its errors: "invalid value: integer `2147483648`, expected i32", ...), then
#   a given value is replaced, a list by as many ``-1`` as it had items, a number by
#   ``-1`` (``null`` stays None). The HTTP handlers of vm.create, vm.add-net,
#   vm.add-device and vm.restore then reset NetConfig.fds, DeviceConfig.fd and
#   RestoredNetConfig.fds to None (FDs only come by SCM_RIGHTS), so vm.info never
#   has them (v53.0+: left out; v52.0/v51.0: ``null``). PlatformConfig.iommufd_fd
#   is not reset: vm.info reports ``-1``.
# * ``NonZeroU64`` / ``NonZeroU32`` (VmSendMigrationData.downtime_ms, .timeout_s,
#   .connections; v52.0+), described as ``u64`` / ``u32``: serde's NonZero visitor
#   expects "a nonzero u64" / "a nonzero u32" in every message ("invalid type:
#   string \"x\", expected a nonzero u64", "invalid value: integer `-1`, expected a
#   nonzero u64", "invalid value: integer `4294967296`, expected a nonzero u32"),
#   and refuses zero: "invalid value: integer `0`, expected a nonzero u64".
# * ``#[serde(deny_unknown_fields)]`` on RateLimiterConfig (virtio-devices/src/
#   lib.rs, every release): an unknown key is refused as soon as it is read,
#   positioned just after the key: "unknown field `bogus`, expected `bandwidth` or
#   `ops`" (the model skips unknown keys).

#: CpusConfig::default (vm_config.rs@v53.0:98): DEFAULT_VCPUS 1, DEFAULT_MAX_PHYS_BITS 46
_CPUS_DEFAULT = {
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
_MEMORY_DEFAULT = {
    "size": 512 << 20,
    "mergeable": False,
    "hotplug_method": "Acpi",
    "shared": False,
    "hugepages": False,
    "prefault": False,
    "reserve": False,
    "thp": True,
}


def _without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def _index(types: Iterable[TypeDef]) -> dict[str, TypeDef]:
    return {t.name: t for t in types}


# --------------------------------------------------------------------------- v53.0
# vmm/src/vm_config.rs@v53.0 (9ed824d6). Line numbers are into that file unless
# another file is named; each is the line of the ``pub struct``/``pub enum``.
_V53: dict[str, TypeDef] = _index(
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
            F("cpus", "CpusConfig", _CPUS_DEFAULT),
            F("memory", "MemoryConfig", _MEMORY_DEFAULT),
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


def _without_skip_none(defs: dict[str, TypeDef]) -> list[TypeDef]:
    """Every struct of ``defs`` as a release without ``skip_serializing_none`` has it."""
    return [
        dataclasses.replace(t, skip_none=False) for t in defs.values() if isinstance(t, StructDef)
    ]


# --------------------------------------------------------------------------- v52.0
# vmm/src/vm_config.rs@v52.0 (1314ac88). v52.0 has no #[serde_with::skip_serializing_none]
# anywhere: every unset Option is written as null (VmInfoResponse too).
_V52: dict[str, TypeDef] = release(
    release(_V53, replace=_without_skip_none(_V53)),
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
            F("cpus", "CpusConfig", _without(_CPUS_DEFAULT, "profile")),
            F("memory", "MemoryConfig", _without(_MEMORY_DEFAULT, "reserve")),
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


# --------------------------------------------------------------------------- v51.0
# vmm/src/vm_config.rs@v51.0 (00e106e5), as a patch of v52.0 (no skip_serializing_none
# either). No PciDeviceCommonConfig yet: each device has its own iommu/id/pci_segment
# (plain fields, iommu always written), and no pci_device_id.
_V51: dict[str, TypeDef] = release(
    _V52,
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
            F("cpus", "CpusConfig", _without(_CPUS_DEFAULT, "profile", "core_scheduling")),
            F("memory", "MemoryConfig", _without(_MEMORY_DEFAULT, "reserve")),
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


# --------------------------------------------------------------------------- HEAD
# upstream main at ae44c2971 (v53.0 + 246 commits), as a patch of v53.0.
_HEAD: dict[str, TypeDef] = release(
    _V53,
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

#: release name -> type definitions (fakechv profile names)
RELEASES: dict[str, dict[str, TypeDef]] = {
    "v51": _V51,
    "v52": _V52,
    "v53": _V53,
    "head": _HEAD,
}


# --------------------------------------------------------------------------- to serde
_PRIMITIVES: dict[str, Callable[[], Type]] = {
    "u8": lambda: Int("u8"),
    "u16": lambda: Int("u16"),
    "u32": lambda: Int("u32"),
    "u64": lambda: Int("u64"),
    "usize": lambda: Int("usize"),
    "i8": lambda: Int("i8"),
    "i16": lambda: Int("i16"),
    "i32": lambda: Int("i32"),
    "i64": lambda: Int("i64"),
    "f64": Float,
    "bool": Bool,
    "String": Str,
    "PathBuf": lambda: Str(path=True),
    "serde_json::Value": AnyValue,
}
_GENERIC = re.compile(r"^(Option|Vec|Box)<(.*)>$")
_SLICE = re.compile(r"^\[(.*)\]$")
_MAP = re.compile(r"^(?:HashMap|BTreeMap)<\s*String\s*,\s*(.*)>$")


def _mac(value: str) -> str:
    """``MacAddr::parse_str`` (net_util/src/mac.rs): six pairs of hex digits."""
    if not _MAC.fullmatch(value):
        raise SerdeError(
            f"The provided MAC address is invalid: parsing of {value} into a MAC address failed"
        )
    return value.lower()


def _ip(value: str) -> str:
    """Rust's ``IpAddr::from_str``, written back by its ``Display``."""
    try:
        if "%" in value or value != value.strip():
            raise ValueError(value)
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise SerdeError("invalid IP address syntax") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return f"::ffff:{addr.ipv4_mapped}"
    return addr.compressed


def _random_mac() -> str:
    """``MacAddr::local_random``: random bytes, the first one 0x2e."""
    return ":".join(["2e", *(f"{b:02x}" for b in os.urandom(5))])


def _nonzero(width: str) -> Type:
    def check(value: int) -> int:
        if value == 0:
            raise SerdeError(f"invalid value: integer `0`, expected a nonzero {width}")
        return value

    return Custom(f"NonZero{width.upper()}", Int(width, expect=f"a nonzero {width}"), check)


_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
#: Rust types with a hand-written Deserialize (see CUSTOM above)
_CUSTOM: dict[str, Callable[[], Type]] = {
    "MacAddr": lambda: Custom("MacAddr", Str(), _mac),
    "IpAddr": lambda: Custom("IpAddr", Str(expect="IP address"), _ip),
    "NonZeroU64": lambda: _nonzero("u64"),
    "NonZeroU32": lambda: _nonzero("u32"),
    # deserialize_with: a number stands for a descriptor of the sender's; CHV keeps -1
    "Fd": lambda: Custom("Fd", Int("i32"), lambda _v: -1),
    "Fds": lambda: Custom("Fds", Seq(Int("i32")), lambda v: [-1] * len(v)),
}


class TypeModel:
    """The serde types of one release (``resolve`` a struct or enum by name)."""

    def __init__(self, defs: dict[str, TypeDef]) -> None:
        self.defs = defs
        self._types: dict[str, Type] = {}

    def parse(self, rust: str) -> Type:
        rust = rust.strip()
        if rust in _PRIMITIVES:
            return _PRIMITIVES[rust]()
        match = _GENERIC.match(rust)
        if match:
            kind, inner = match.groups()
            if kind == "Option":
                return Opt(self.parse(inner))
            if kind == "Vec":
                return Seq(self.parse(inner))
            slice_match = _SLICE.match(inner.strip())
            if slice_match:  # Box<[T]> reads as a sequence
                return Seq(self.parse(slice_match.group(1)))
            return self.parse(inner)
        match = _MAP.match(rust)
        if match:
            return MapOf(self.parse(match.group(1)))
        if rust in _CUSTOM:
            return _CUSTOM[rust]()
        if rust in self.defs:
            return Ref(rust)
        raise KeyError(f"unknown Rust type {rust!r}")

    def resolve(self, name: str) -> Type:
        ty = self._types.get(name)
        if ty is None:
            ty = self._types[name] = self._build(self.defs[name])
        return ty

    def _build(self, d: TypeDef) -> Type:
        if isinstance(d, EnumDef):
            return Enum(d.name, d.variants)
        fields: list[Field] = []
        for f in d.fields:
            if f.skip:
                continue
            if f.flatten:
                inner = self.defs[f.rust]
                assert isinstance(inner, StructDef)
                for sub in inner.fields:
                    fields.append(self._field(sub, group=f.name))
                continue
            fields.append(self._field(f, group=None))
        return Struct(d.name, tuple(fields), deny_unknown=d.deny_unknown)

    def _field(self, f: FieldDef, *, group: str | None) -> Field:
        ty = self.parse(f.rust)
        default: Any = NO_DEFAULT
        if f.default is RANDOM_MAC:
            default = _random_mac
        elif f.default is not REQUIRED:
            value = f.default
            default = lambda v=value: copy.deepcopy(v)  # noqa: E731 - a default factory
        return Field(f.name, ty, default, flatten=group, aliases=f.alias)

    # ------------------------------------------------------------------ reading
    def read(self, name: str, body: bytes) -> Any:
        """``serde_json::from_slice::<name>(body)`` (raises :class:`fakechv.serde.SerdeError`)."""
        from fakechv.serde import from_slice

        return from_slice(body, Ref(name), self.resolve)

    # ------------------------------------------------------------------ writing
    def write(self, name: str, value: Any) -> Any:
        """The JSON serde_json writes for ``value`` read as ``name`` (vm.info's config):
        fields in declaration order, flattened structs inline, unset options left out
        (``skip_serializing_none``) or ``null``, ``skip_false`` bools left out when false."""
        return self._write_type(self.parse(name) if name not in self.defs else Ref(name), value)

    def _write_type(self, ty: Type, value: Any) -> Any:
        if isinstance(ty, Ref):
            d = self.defs[ty.name]
            if isinstance(d, EnumDef):
                return value
            return self._write_struct(d, value)
        if isinstance(ty, Opt):
            return None if value is None else self._write_type(ty.inner, value)
        if isinstance(ty, Seq) and isinstance(value, list):
            return [self._write_type(ty.item, v) for v in value]
        if isinstance(ty, MapOf) and isinstance(value, dict):
            return {k: self._write_type(ty.value, v) for k, v in value.items()}
        return copy.deepcopy(value)

    def _write_struct(self, d: StructDef, value: Any) -> Any:
        if not isinstance(value, dict):
            return copy.deepcopy(value)
        out: dict[str, Any] = {}
        for f in d.fields:
            if f.skip:
                continue
            if f.flatten:
                inner = self.defs[f.rust]
                assert isinstance(inner, StructDef)
                out.update(self._write_struct(inner, value))
                continue
            ty = self.parse(f.rust)
            present = f.name in value and value[f.name] is not None
            if not present:
                if isinstance(ty, Opt):
                    if not d.skip_none:
                        out[f.name] = None
                    continue
                if f.name not in value:
                    continue  # not set by the reader: nothing CHV would have
            v = value[f.name]
            if f.skip_false and v is False:
                continue
            out[f.name] = self._write_type(ty, v)
        return out


@functools.cache
def model(release_name: str) -> TypeModel:
    """The type model of a fakechv profile's release."""
    return TypeModel(RELEASES[release_name])
