"""VmConfig handling as CHV does it: serde-style parsing, defaults, validation.

Parsing follows the release's official OpenAPI schema for the set of known
fields and their JSON types, with the Rust integer widths of the source
(``pci_segment`` is ``u16`` although the spec says int16; ``pci_device_id`` is
``u8``). Unknown fields are dropped silently (no ``deny_unknown_fields`` in
CHV), so a v51 fakechv ignores ``pci_device_id`` exactly like CHV v51.
Type errors produce serde_json's message with its position suffix
(``invalid type: string "x", expected u8 at line 1 column 40``).

Deviations from the spec, from the source (vmm/src/vm_config.rs@v53.0):

* ``payload`` is ``Option<PayloadConfig>``: a config without it is accepted by
  vm.create and rejected by vm.boot ("Payload configuration is not bootable",
  "No bootitem provided: neither firmware nor kernel"); the spec marks it required.
* the VmConfig key of generic vhost-user devices is ``generic_vhost_user``.

:func:`validate` is ``VmConfig::validate`` for the parts fakechv emulates, in
the source's order, with its exact messages.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from fakechv.errors import ApiError, ErrorKind
from fakechv.profiles import Profile
from fakechv.serde import (
    NO_DEFAULT,
    AnyValue,
    Bool,
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
    from_slice,
)

__all__ = [
    "DEFAULT_MEMORY_SIZE",
    "ConfigError",
    "deserialize",
    "deserialize_bytes",
    "num_pci_segments",
    "serialize_config",
    "validate",
]

DEFAULT_MEMORY_SIZE = 512 << 20
MAX_NUM_PCI_SEGMENTS = 96


class ConfigError(ValueError):
    """A body that serde would refuse; ``str()`` is serde_json's message."""


# ---------------------------------------------------------------- the Rust types, from the spec

_FORMAT_TYPES = {
    "uint8": "u8",
    "int8": "u8",
    "uint16": "u16",
    "int16": "u16",
    "uint32": "u32",
    "int32": "u32",
    "uint64": "u64",
    "int64": "u64",
}
#: (schema, property) -> Rust integer type where the spec's format misleads
_RUST_INT: dict[tuple[str, str], str] = {
    ("VmmPingResponse", "pid"): "i64",
    ("VsockConfig", "cid"): "u32",
    ("DiskConfig", "num_queues"): "usize",
    ("DiskConfig", "queue_size"): "u16",
    ("NetConfig", "num_queues"): "usize",
    ("NetConfig", "queue_size"): "u16",
    ("NetConfig", "mtu"): "u16",
    ("CpusConfig", "boot_vcpus"): "u32",
    ("CpusConfig", "max_vcpus"): "u32",
}
#: schema -> fields that are not ``Option`` although the spec does not say
#: required (they are serde-defaulted instead; see _STRUCT_DEFAULTS)
_STRUCT_DEFAULTS: dict[str, dict[str, Any]] = {
    "VmConfig": {
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": {"size": DEFAULT_MEMORY_SIZE},
        "rng": {"src": "/dev/urandom"},
        "serial": {"mode": "Null"},
        "console": {"mode": "Tty"},
        "debug_console": {"mode": "Off"},
        "pvpanic": False,
        "iommu": False,
        "watchdog": False,
        "landlock_enable": False,
    },
    "PlatformConfig": {"num_pci_segments": 1},
}
#: fields that are ``PathBuf`` in the source (serde expects "path string")
_PATH_FIELDS = frozenset(
    {"path", "socket", "vhost_socket", "file", "src", "kernel", "firmware", "initramfs", "igvm"}
)
#: VmConfig keys whose source name differs from the spec's
_KEY_RENAMES = {"generic-vhost-user": "generic_vhost_user"}
#: spec-required fields that the source makes optional
_NOT_REQUIRED = {("VmConfig", "payload")}
#: fields the source requires although the spec does not
_EXTRA_REQUIRED: dict[str, list[str]] = {
    "VmRemoveDevice": ["id"],
    "VmSnapshotConfig": ["destination_url"],
}


@functools.cache
def _schemas(spec_profile: str) -> dict[str, Any]:
    from fakechv.openapi import load_spec

    doc = load_spec(spec_profile)
    schemas = copy.deepcopy(doc["components"]["schemas"])
    vm = schemas.get("VmConfig", {}).get("properties", {})
    for old, new in _KEY_RENAMES.items():
        if old in vm:
            vm[new] = vm.pop(old)
    return dict(schemas)


def has_schema(profile: Profile, name: str) -> bool:
    """Whether ``profile``'s spec defines component ``name``."""
    return name in _schemas(profile.spec_profile)


def schema_properties(profile: Profile, name: str) -> dict[str, Any]:
    """The spec properties of component ``name`` for ``profile``."""
    return dict(_schemas(profile.spec_profile).get(name, {}).get("properties", {}))


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        return _ref_name(all_of[0])
    return None


#: the fields of CHV's ``PciDeviceCommonConfig`` (v52+), flattened into every device
#: config that has them, in declaration order (vm_config.rs@v53.0:369)
_PCI_COMMON = ("id", "iommu", "pci_segment", "pci_device_id")
#: the fields of ``CommonConsoleConfig`` (v52+), flattened into SerialConfig and
#: ConsoleConfig (vm_config.rs@v53.0:650)
_CONSOLE_COMMON = ("file", "mode", "socket")


def _field_type(profile: Profile, owner: str, key: str, prop: Any) -> Type:
    if not isinstance(prop, dict):
        return AnyValue()
    ref = _ref_name(prop)
    if ref is not None:
        return Ref(ref)
    if "enum" in prop:
        return Enum(key, tuple(str(v) for v in prop["enum"]))
    typ = prop.get("type")
    if typ == "integer":
        return Int(_RUST_INT.get((owner, key)) or _FORMAT_TYPES.get(prop.get("format", ""), "u64"))
    if typ == "number":
        return Float()
    if typ == "boolean":
        return Bool()
    if typ == "string":
        return Str(path=key in _PATH_FIELDS)
    if typ == "array":
        return Seq(_field_type(profile, owner, key, prop.get("items", {})))
    if typ == "object":
        add = prop.get("additionalProperties")
        if isinstance(add, dict):
            return MapOf(_field_type(profile, owner, key, add))
    return AnyValue()


def _flatten_group(profile: Profile, name: str, key: str, props: dict[str, Any]) -> str | None:
    """Which flattened struct the field ``key`` of ``name`` belongs to, if any."""
    if profile.name == "v51":
        return None  # v51 has no flattened common configs
    if key in _PCI_COMMON and "pci_segment" in props:
        return "pci_common"
    if key in _CONSOLE_COMMON and name in ("SerialConfig", "ConsoleConfig"):
        return "common"
    return None


class _Model:
    """The serde types of one spec, built once per release (see :func:`_model`)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.schemas = _schemas(profile.spec_profile)
        self.types: dict[str, Type] = {}

    def resolve(self, name: str) -> Type:
        ty = self.types.get(name)
        if ty is None:
            ty = self.types[name] = self._build(name)
        return ty

    def _build(self, name: str) -> Type:
        schema = self.schemas.get(name)
        if not isinstance(schema, dict):
            return AnyValue()
        if "enum" in schema:
            return Enum(name, tuple(str(v) for v in schema["enum"]))
        props: dict[str, Any] = schema.get("properties") or {}
        if schema.get("type") != "object" and not props:
            return _field_type(self.profile, name, "", schema)
        required = {*schema.get("required", []), *_EXTRA_REQUIRED.get(name, [])}
        own: list[Field] = []
        groups: dict[str, list[Field]] = {}
        for key, prop in props.items():
            ty = _field_type(self.profile, name, key, prop)
            group = _flatten_group(self.profile, name, key, props)
            default: Any = NO_DEFAULT
            if key in required and (name, key) not in _NOT_REQUIRED:
                pass
            elif key == "pci_segment":
                default = 0  # u16 with serde default 0
            elif isinstance(prop, dict) and "default" in prop:
                default = copy.deepcopy(prop["default"])
            elif key in _STRUCT_DEFAULTS.get(name, {}):
                default = self._default_of(ty, _STRUCT_DEFAULTS[name][key])
            else:
                ty = Opt(ty)
            f = Field(key, ty, default, flatten=group)
            (groups.setdefault(group, []) if group else own).append(f)
        fields = own + [f for group in groups.values() for f in group]
        return Struct(name, tuple(fields))

    def _default_of(self, ty: Type, default: Any) -> Any:
        if isinstance(ty, Ref) and isinstance(default, dict):
            raw = json.dumps(default).encode()
            return lambda: from_slice(raw, ty, self.resolve)
        return lambda: copy.deepcopy(default)


@functools.cache
def _model(profile: Profile) -> _Model:
    return _Model(profile)


def _schema_type(profile: Profile, name: str) -> Type:
    return _model(profile).resolve(name)


def deserialize_bytes(profile: Profile, schema_name: str, raw: bytes) -> dict[str, Any]:
    """``serde_json::from_slice`` of a request body as the component ``schema_name``.

    Returns the normalised object (unknown fields dropped, ``null`` options and
    absent ones left out, defaults filled). Raises :class:`ConfigError` with
    serde_json's message and position.
    """
    try:
        value = from_slice(raw, _schema_type(profile, schema_name), _model(profile).resolve)
    except SerdeError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(value, dict):  # pragma: no cover - every schema used is a struct
        raise ConfigError(f"invalid type: expected struct {schema_name}")
    return value


def deserialize(profile: Profile, schema_name: str, value: Any) -> dict[str, Any]:
    """:func:`deserialize_bytes` of an already decoded JSON value (a stored config)."""
    try:
        raw = json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise ConfigError(f"not a JSON value: {exc}") from None
    return deserialize_bytes(profile, schema_name, raw)


# ---------------------------------------------------------------- serialization


def serialize_config(profile: Profile, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as vm.info shows it: unset ``Option`` fields null (<= v52) or omitted.

    From v52 the device ``iommu`` flag is omitted when false
    (``skip_serializing_if`` on PciDeviceCommonConfig).
    """
    out = _ser_struct(profile, "VmConfig", config)
    assert isinstance(out, dict)
    return out


def _ser_struct(profile: Profile, name: str, value: Any) -> Any:
    schema = _schemas(profile.spec_profile).get(name)
    if schema is None or not isinstance(value, dict) or "properties" not in schema:
        return copy.deepcopy(value)
    props: dict[str, Any] = schema["properties"]
    out: dict[str, Any] = {}
    for key, prop in props.items():
        if key in value:
            out[key] = _ser_value(profile, prop, value[key])
        elif profile.null_unset:
            out[key] = None
    for key, v in value.items():
        if key not in out:
            out[key] = copy.deepcopy(v)
    if (
        profile.name != "v51"
        and "pci_segment" in props
        and out.get("iommu") is False
        and "iommu" in props
    ):
        del out["iommu"]
    return out


def _ser_value(profile: Profile, schema: Any, value: Any) -> Any:
    if not isinstance(schema, dict):
        return copy.deepcopy(value)
    ref = _ref_name(schema)
    if ref is not None:
        return _ser_struct(profile, ref, value)
    if schema.get("type") == "array" and isinstance(value, list):
        return [_ser_value(profile, schema.get("items", {}), v) for v in value]
    return copy.deepcopy(value)


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

    def devices(key: str) -> list[dict[str, Any]]:
        v = config.get(key)
        return [d for d in v if isinstance(d, dict)] if isinstance(v, list) else []

    shared = _backed_by_shared_memory(config)
    vhost_msg = "Using vhost-user requires using shared memory or huge pages"
    for key in ("disks", "net", "fs", "generic_vhost_user", "pmem"):
        if key in ("fs", "generic_vhost_user") and devices(key) and not shared:
            raise _verr(vhost_msg)
        for dev in devices(key):
            if key in ("disks", "net") and dev.get("vhost_user") is True and not shared:
                raise _verr(vhost_msg)
            _validate_pci_common(profile, config, dev)
            _validate_identifier(profile, ids, dev.get("id"))
    for key in ("rng", "rtc", "console"):
        single = config.get(key)
        if key != "rtc" and not profile.rng_console_have_id:
            continue  # before v52 rng and console have no PCI common config
        if isinstance(single, dict):
            _validate_pci_common(profile, config, single)
            _validate_identifier(profile, ids, single.get("id"))
    for key in ("user_devices", "vdpa"):
        if key == "user_devices" and devices(key) and not shared:
            raise _verr("Using user devices requires using shared memory or huge pages")
        for dev in devices(key):
            _validate_pci_common(profile, config, dev)
            _validate_identifier(profile, ids, dev.get("id"))
    vsock = config.get("vsock")
    if isinstance(vsock, dict) and vsock.get("cid") in (2**32 - 1, 0, 1, 2):
        raise _verr(f"{vsock['cid']} is a special VSOCK CID")
    balloon = config.get("balloon")
    if isinstance(balloon, dict):
        _validate_pci_common(profile, config, balloon)
        _validate_identifier(profile, ids, balloon.get("id"))
    paths: set[str] = set()
    for dev in devices("devices"):
        path = dev.get("path")
        if path is not None:
            if path in paths:
                raise _verr(f"Duplicated device path: {path}", kind=ErrorKind.NOT_UNIQUE)
            paths.add(path)
        _validate_pci_common(profile, config, dev)
        _validate_identifier(profile, ids, dev.get("id"))
    if isinstance(vsock, dict):
        _validate_pci_common(profile, config, vsock)
        _validate_identifier(profile, ids, vsock.get("id"))
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
