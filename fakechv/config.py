"""VmConfig handling as CHV does it: serde's reading and writing, validation.

Bodies are read with the Rust types of the release (:mod:`fakechv.configtypes`,
from vmm/src/vm_config.rs, not the OpenAPI spec, which lacks fields, defaults and
integer widths) by a serde_json emulation (:mod:`fakechv.serde`): unknown fields
are dropped silently (no ``deny_unknown_fields`` in CHV but on RateLimiterConfig),
so a v51 fakechv ignores ``pci_device_id`` exactly like CHV v51; errors are
serde_json's, with its position (``invalid type: string "x", expected u8 at line
1 column 40``). vm.info's config is written back the way serde writes it.

:func:`validate` is ``VmConfig::validate`` for the parts fakechv emulates, in
the source's order, with its exact messages.
"""

from __future__ import annotations

import json
import marshal
import os
from typing import Any

from fakechv.configtypes import WIRE_NAMES, model
from fakechv.devices import DEVICE_KINDS, VHOST_USER_NEEDS_SHARED_MEMORY
from fakechv.errors import ApiError, ErrorKind
from fakechv.jsoncopy import copy_json
from fakechv.profiles import Profile
from fakechv.serde_errors import SerdeError
from fakechv.typemodel import RANDOM_DRAWS

__all__ = [
    "DEFAULT_MEMORY_SIZE",
    "ConfigError",
    "deserialize",
    "deserialize_bytes",
    "num_pci_segments",
    "remove_device_entry",
    "serialize_config",
    "validate",
]

DEFAULT_MEMORY_SIZE = 512 << 20
MAX_NUM_PCI_SEGMENTS = 96


class ConfigError(ValueError):
    """A body that serde would refuse; ``str()`` is serde_json's message."""


# ---------------------------------------------------------------- reading and writing


#: what :func:`deserialize_bytes` read, by (config types, type name, body): a driver
#: sends the same bodies again and again (each start of a domain, each re-attach), and
#: the reading depends on nothing else, unless a default drew a random value (a net's
#: MAC): such a reading is never kept. A value, or the refusal's message.
_READ: dict[tuple[str, str, bytes], dict[str, Any] | str] = {}
_READ_MAX = 512
#: bodies longer than this are read afresh every time
_READ_MAX_BODY = 1 << 16


def deserialize_bytes(profile: Profile, type_name: str, raw: bytes) -> dict[str, Any]:
    """``serde_json::from_slice`` of a request body as CHV's Rust type ``type_name``
    (:mod:`fakechv.configtypes`: ``VmConfig``, ``DiskConfig``, ``VmRemoveDeviceData``, ...).

    Returns the object CHV would hold: unknown fields dropped, options left out when
    unset, defaults filled. Raises :class:`ConfigError` with serde_json's message
    and position.

    A body read before is not read again: its value is copied (the caller may change
    it), or its refusal raised again. With ``FAKECHV_VERIFY_CACHES=1`` every body is
    read again and compared with what was kept.
    """
    if len(raw) > _READ_MAX_BODY:
        return _read_bytes(profile, type_name, raw)
    key = (profile.config_types, type_name, raw)
    kept = _READ.get(key)
    if kept is not None and os.environ.get("FAKECHV_VERIFY_CACHES") == "1":
        _verify_read(profile, type_name, raw, kept)
    if kept is None:
        draws = RANDOM_DRAWS[0]
        try:
            kept = _read_bytes(profile, type_name, raw)
        except ConfigError as exc:
            kept = str(exc)
        if RANDOM_DRAWS[0] != draws:  # not repeatable
            if isinstance(kept, str):
                raise ConfigError(kept)
            return kept
        if len(_READ) >= _READ_MAX:
            del _READ[next(iter(_READ))]  # the oldest
        _READ[key] = kept
    if isinstance(kept, str):
        raise ConfigError(kept)
    return copy_json(kept)


def _verify_read(profile: Profile, type_name: str, raw: bytes, kept: dict[str, Any] | str) -> None:
    try:
        fresh: dict[str, Any] | str = _read_bytes(profile, type_name, raw)
    except ConfigError as exc:
        fresh = str(exc)
    # compared as JSON text: key order and true vs 1 count
    if json.dumps(fresh) != json.dumps(kept):
        raise AssertionError(
            f"fakechv: a kept reading of {raw!r} is stale: {kept!r} is now {fresh!r}"
        )


def _read_bytes(profile: Profile, type_name: str, raw: bytes) -> dict[str, Any]:
    try:
        value = model(profile.config_types).read(type_name, raw)
    except SerdeError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(value, dict):  # pragma: no cover - every body type is a struct
        raise ConfigError(f"invalid type: expected struct {type_name}")
    wire = WIRE_NAMES.get(profile.config_types)
    if wire:
        value = _renamed(value, {w: name for name, w in wire.items()})
    return value


def _renamed(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every object key in ``names`` renamed (a fork's wire names)."""
    if isinstance(value, dict):
        return {names.get(k, k): _renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, names) for v in value]
    return value


def deserialize(profile: Profile, type_name: str, value: Any) -> dict[str, Any]:
    """:func:`deserialize_bytes` of an already decoded JSON value (a stored config)."""
    try:
        raw = json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise ConfigError(f"not a JSON value: {exc}") from None
    return deserialize_bytes(profile, type_name, raw)


#: what :func:`serialize_config` wrote, by (config types, the config as marshal bytes):
#: a VM's config recurs (every boot of a domain, a hot-plug undone, the same domain on
#: the next VMM), and its writing depends on nothing else
_WRITTEN: dict[tuple[str, bytes], dict[str, Any]] = {}
_WRITTEN_MAX = 512


def serialize_config(profile: Profile, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as vm.info shows it: CHV's field order, flattened structs inline,
    unset options left out (v53+) or ``null`` (v52 and before), false ``iommu`` flags
    left out (v52+).

    A config written before (the same values, in the same order) is not written again:
    the caller gets a copy of what was kept. With ``FAKECHV_VERIFY_CACHES=1`` it is
    written again and compared.
    """
    try:
        key = (profile.config_types, marshal.dumps(config))
    except ValueError:  # not plain JSON data: written afresh
        return _write_config(profile, config)
    kept = _WRITTEN.get(key)
    if kept is None:
        kept = _write_config(profile, config)
        if len(_WRITTEN) >= _WRITTEN_MAX:
            del _WRITTEN[next(iter(_WRITTEN))]  # the oldest
        _WRITTEN[key] = kept
    elif os.environ.get("FAKECHV_VERIFY_CACHES") == "1":
        fresh = _write_config(profile, config)
        if json.dumps(fresh) != json.dumps(kept):  # key order and true vs 1 count
            raise AssertionError(
                f"fakechv: a kept vm.info config is stale: {kept!r} is now {fresh!r}"
            )
    return copy_json(kept)


def _write_config(profile: Profile, config: dict[str, Any]) -> dict[str, Any]:
    wire = WIRE_NAMES.get(profile.config_types)
    out = model(profile.config_types).write("VmConfig", _renamed(config, wire) if wire else config)
    assert isinstance(out, dict)
    return out


#: the kinds whose entries ``VmConfig::remove_device`` looks in, in its order
_REMOVABLE_ENTRIES = (
    "disk",
    "net",
    "fs",
    "pmem",
    "vdpa",
    "device",
    "user_device",
    "generic_vhost_user",
    "vsock",
)


def remove_device_entry(config: dict[str, Any], ident: str) -> bool:
    """``VmConfig::remove_device``: drop the entry with ``id == ident``; whether
    there was one."""
    removed = False
    for kind in (DEVICE_KINDS[k] for k in _REMOVABLE_ENTRIES):
        assert kind.config_key is not None
        items = config.get(kind.config_key)
        if kind.single:
            if isinstance(items, dict) and items.get("id") == ident:
                del config[kind.config_key]
                removed = True
        elif isinstance(items, list):
            kept = [d for d in items if not (isinstance(d, dict) and d.get("id") == ident)]
            if len(kept) != len(items):
                config[kind.config_key] = kept
                removed = True
    return removed


# ---------------------------------------------------------------- validation


def num_pci_segments(config: dict[str, Any]) -> int:
    platform = config.get("platform")
    if isinstance(platform, dict):
        return int(platform.get("num_pci_segments", 1))
    return 1


def _verr(*messages: str, kind: ErrorKind = ErrorKind.VALIDATION) -> ApiError:
    return ApiError(["Failed to validate config", *messages], kind)


def _validate_pci_common(profile: Profile, config: dict[str, Any], dev: dict[str, Any]) -> None:
    seg = int(dev.get("pci_segment", 0))
    platform = config.get("platform")
    if not (profile.segment_check_needs_platform and not isinstance(platform, dict)):
        if seg >= num_pci_segments(config):
            raise _verr(f"Invalid PCI segment id: {seg}")
    if isinstance(platform, dict):
        iommu_segments = platform.get("iommu_segments") or []
        if seg in iommu_segments and not dev.get("iommu", False):
            raise _verr(f"Device is on an IOMMU PCI segment ({seg}) but not placed behind IOMMU")
    dev_id = dev.get("pci_device_id")
    if dev_id is not None:
        if dev_id >= 32:
            raise _verr(f"Given PCI device ID ({dev_id}) is out of the supported range of 0..32")
        if dev_id == 0 and (profile.reserved_id0_all_segments or seg == 0):
            raise _verr("Given PCI device ID (0) is reserved")


def _validate_identifier(profile: Profile, ids: set[str], ident: Any) -> None:
    if ident is None:
        return
    ident = str(ident)
    if ident.startswith("__"):
        raise _verr(f"Identifier {ident} is not {profile.invalid_identifier_word}")
    if ident in ids:
        raise _verr(f"Identifier {ident} is not unique", kind=ErrorKind.NOT_UNIQUE)
    ids.add(ident)


def _backed_by_shared_memory(config: dict[str, Any]) -> bool:
    memory = config.get("memory") or {}
    if memory.get("shared") is True or memory.get("hugepages") is True:
        return True
    if memory.get("size", DEFAULT_MEMORY_SIZE) == 0:
        zones = [z for z in memory.get("zones") or [] if isinstance(z, dict)]
        return all(z.get("shared") is True or z.get("hugepages") is True for z in zones)
    return False


def _validate_queues(kind: str, dev: dict[str, Any], boot_vcpus: int) -> None:
    """The queue checks of DiskConfig, NetConfig and FsConfig::validate
    (vmm/src/config.rs@v53.0:1622, 1845-1870, 2170): a disk or fs has at most one queue
    per boot vCPU, a net at least 2 queues, one fd per queue pair, and at most one
    queue pair per boot vCPU."""
    if kind in ("disk", "fs"):
        queues = int(dev.get("num_queues", 1))
        if queues > boot_vcpus:
            raise _verr(f"Queue count ({queues}) must not exceed boot vCPUs ({boot_vcpus})")
    elif kind == "net":
        queues = int(dev.get("num_queues", 2))
        if queues < 2:
            raise _verr(f"Number of queues ({queues}) to virtio_net should be higher than 2")
        fds = dev.get("fds")
        if isinstance(fds, list) and len(fds) * 2 != queues:
            raise _verr(
                f"Number of queues ({queues}) to virtio_net does not match the number "
                f"of FDs ({len(fds) * 2})"
            )
        if queues // 2 > boot_vcpus:
            raise _verr(f"Queue count ({queues}) must not exceed boot vCPUs ({boot_vcpus})")


def validate(profile: Profile, config: dict[str, Any]) -> set[str]:
    """``VmConfig::validate``: raise :class:`ApiError` (messages start with
    "Failed to validate config") or return the set of explicit identifiers."""
    ids: set[str] = set()
    payload = config.get("payload")
    if not isinstance(payload, dict):
        raise _verr(
            "Payload configuration is not bootable",
            "No bootitem provided: neither firmware nor kernel",
        )
    has_fw = payload.get("firmware") is not None
    has_kernel = payload.get("kernel") is not None
    if has_fw and has_kernel:
        raise _verr(
            "Payload configuration is not bootable",
            "Specifying a kernel is not supported when a firmware is provided",
        )
    if not has_fw and not has_kernel and payload.get("igvm") is None:
        raise _verr(
            "Payload configuration is not bootable",
            "No bootitem provided: neither firmware nor kernel",
        )
    for key in ("console", "serial"):
        c = config.get(key) or {}
        if c.get("mode") == "File" and c.get("file") is None:
            raise _verr("Path missing when using file console mode")
    cpus = config.get("cpus") or {}
    boot, maxv = int(cpus.get("boot_vcpus", 1)), int(cpus.get("max_vcpus", 1))
    if maxv < boot:
        raise _verr(f"Max CPUs ({maxv}) lower than boot CPUs ({boot})")

    def pci_devices(*kind_names: str) -> None:
        """Each kind's shared-memory needs, then each entry's PCI common config
        and id, kind after kind."""
        for kind in (DEVICE_KINDS[k] for k in kind_names):
            if not kind.has_pci_common(profile):
                continue  # before v52 rng and console have no PCI common config
            entries = kind.entries(config)
            if kind.needs_shared_memory and entries and not shared:
                raise _verr(kind.needs_shared_memory)
            for dev in entries:
                if kind.vhost_user_option and dev.get("vhost_user") is True and not shared:
                    raise _verr(VHOST_USER_NEEDS_SHARED_MEMORY)
                _validate_pci_common(profile, config, dev)
                _validate_queues(kind.name, dev, boot)
                _validate_identifier(profile, ids, dev.get("id"))

    shared = _backed_by_shared_memory(config)
    pci_devices("disk", "net", "fs", "generic_vhost_user", "pmem")
    pci_devices("rng", "rtc", "console")
    pci_devices("user_device", "vdpa")
    vsock = config.get("vsock")
    if isinstance(vsock, dict) and vsock.get("cid") in (2**32 - 1, 0, 1, 2):
        raise _verr(f"{vsock['cid']} is a special VSOCK CID")
    pci_devices("balloon")
    paths: set[str] = set()
    for dev in DEVICE_KINDS["device"].entries(config):
        path = dev.get("path")
        if path is not None:
            if path in paths:
                raise _verr(f"Duplicated device path: {path}", kind=ErrorKind.NOT_UNIQUE)
            paths.add(path)
        _validate_pci_common(profile, config, dev)
        _validate_identifier(profile, ids, dev.get("id"))
    pci_devices("vsock")
    memory = config.get("memory") or {}
    for zone in memory.get("zones") or []:
        if isinstance(zone, dict) and "id" in zone:
            _validate_identifier(profile, ids, zone["id"])
    platform = config.get("platform")
    if isinstance(platform, dict):
        n = int(platform.get("num_pci_segments", 1))
        if n == 0 or n > MAX_NUM_PCI_SEGMENTS:
            raise _verr(f"Number of PCI segments ({n}) not in range of 1 to {MAX_NUM_PCI_SEGMENTS}")
        for seg in platform.get("iommu_segments") or []:
            if seg >= n:
                raise _verr(f"Invalid PCI segment id: {seg}")
    return ids
