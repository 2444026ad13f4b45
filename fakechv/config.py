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

__all__ = [
    "DEFAULT_MEMORY_SIZE",
    "ConfigError",
    "deserialize",
    "num_pci_segments",
    "parse_json",
    "serialize_config",
    "validate",
]

DEFAULT_MEMORY_SIZE = 512 << 20
MAX_NUM_PCI_SEGMENTS = 96


class ConfigError(ValueError):
    """A body that serde would refuse; ``str()`` is serde_json's message."""


# ---------------------------------------------------------------- JSON + positions


def parse_json(raw: bytes) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Decode ``raw`` like serde_json and return ``(value, end offsets by path)``.

    Raises :class:`ConfigError` with a serde_json-like syntax message.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"invalid unicode code point at line 1 column {exc.start + 1}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(_syntax_message(text, exc)) from None
    except RecursionError:
        raise ConfigError("recursion limit exceeded at line 1 column 1") from None
    ends: dict[tuple[Any, ...], int] = {}
    try:
        _scan(text, _skip_ws(text, 0), (), ends)
    except (IndexError, ValueError, RecursionError):
        ends = {}
    return value, ends


def _line_col(text: str, end: int) -> tuple[int, int]:
    line = text.count("\n", 0, end) + 1
    start = text.rfind("\n", 0, end) + 1
    return line, end - start


def _syntax_message(text: str, exc: json.JSONDecodeError) -> str:
    stripped = text.strip()
    if not stripped:
        line, col = _line_col(text, len(text))
        return f"EOF while parsing a value at line {line} column {col}"
    msg = exc.msg
    pos = exc.pos
    if msg.startswith("Extra data"):
        what = "trailing characters"
        pos += 1
    elif pos >= len(text):
        what = "EOF while parsing a value"
        if text.lstrip().startswith("{"):
            what = "EOF while parsing an object"
        elif text.lstrip().startswith("["):
            what = "EOF while parsing a list"
    elif msg.startswith("Expecting property name"):
        what = "key must be a string"
        pos += 1
    elif msg.startswith("Expecting ':'"):
        what = "expected `:`"
        pos += 1
    elif msg.startswith("Expecting ',' delimiter"):
        what = "expected `,` or `}`" if _in_object(text, pos) else "expected `,` or `]`"
        pos += 1
    elif msg.startswith("Invalid control character"):
        what = "control character (\\u0000-\\u001F) found while parsing a string"
        pos += 1
    elif msg.startswith("Invalid \\escape") or msg.startswith("Invalid \\u"):
        what = "invalid escape"
        pos += 2
    elif msg.startswith("Unterminated string"):
        what = "EOF while parsing a string"
        pos = len(text)
    else:
        what = "expected value"
        pos += 1
    line, col = _line_col(text, min(pos, len(text)))
    return f"{what} at line {line} column {col}"


def _in_object(text: str, pos: int) -> bool:
    depth: list[str] = []
    in_str = False
    esc = False
    for ch in text[:pos]:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "{[":
            depth.append(ch)
        elif ch in "}]" and depth:
            depth.pop()
    return bool(depth) and depth[-1] == "{"


_WS = " \t\n\r"


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _scan_string(text: str, i: int) -> tuple[str, int]:
    j = i + 1
    while text[j] != '"':
        j += 2 if text[j] == "\\" else 1
    return json.loads(text[i : j + 1]), j + 1


def _scan(text: str, i: int, path: tuple[Any, ...], ends: dict[tuple[Any, ...], int]) -> int:
    ch = text[i]
    if ch == "{":
        i = _skip_ws(text, i + 1)
        if text[i] == "}":
            ends[path] = i + 1
            return i + 1
        while True:
            key, i = _scan_string(text, i)
            i = _skip_ws(text, i)
            i = _skip_ws(text, i + 1)  # ':'
            i = _scan(text, i, (*path, key), ends)
            i = _skip_ws(text, i)
            if text[i] == "}":
                ends[path] = i + 1
                return i + 1
            i = _skip_ws(text, i + 1)
    if ch == "[":
        i = _skip_ws(text, i + 1)
        idx = 0
        if text[i] == "]":
            ends[path] = i + 1
            return i + 1
        while True:
            i = _scan(text, i, (*path, idx), ends)
            idx += 1
            i = _skip_ws(text, i)
            if text[i] == "]":
                ends[path] = i + 1
                return i + 1
            i = _skip_ws(text, i + 1)
    if ch == '"':
        _, j = _scan_string(text, i)
        ends[path] = j
        return j
    j = i
    while j < len(text) and text[j] not in _WS + ",]}":
        j += 1
    ends[path] = j
    return j


# ---------------------------------------------------------------- schema-driven serde

_INT_RANGES: dict[str, tuple[int, int]] = {
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "usize": (0, 2**64 - 1),
    "i64": (-(2**63), 2**63 - 1),
}
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


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return f"string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


class _Ctx:
    def __init__(self, profile: Profile, text_ends: dict[tuple[Any, ...], int], text: str):
        self.profile = profile
        self.ends = text_ends
        self.text = text

    def fail(self, msg: str, path: tuple[Any, ...]) -> ConfigError:
        end = self.ends.get(path)
        if end is None or not self.text:
            return ConfigError(msg)
        line, col = _line_col(self.text, end)
        return ConfigError(f"{msg} at line {line} column {col}")


def deserialize(
    profile: Profile,
    schema_name: str,
    value: Any,
    *,
    ends: dict[tuple[Any, ...], int] | None = None,
    text: str = "",
) -> dict[str, Any]:
    """Deserialize ``value`` as the spec component ``schema_name`` the way serde would.

    Returns the normalised object (unknown fields dropped, defaults filled).
    Raises :class:`ConfigError` with serde_json's message.
    """
    ctx = _Ctx(profile, ends or {}, text)
    if not isinstance(value, dict):
        raise ctx.fail(f"invalid type: {_describe(value)}, expected struct {schema_name}", ())
    out = _de_struct(ctx, schema_name, value, ())
    if not isinstance(out, dict):
        raise ctx.fail(f"invalid type: {_describe(value)}, expected struct {schema_name}", ())
    return out


def _de_struct(ctx: _Ctx, name: str, value: Any, path: tuple[Any, ...]) -> Any:
    schema = _schemas(ctx.profile.spec_profile).get(name)
    if schema is None:
        return copy.deepcopy(value)
    if "enum" in schema:
        return _de_enum(ctx, schema, value, path)
    if schema.get("type") != "object" and "properties" not in schema:
        return _de_value(ctx, name, "", schema, value, path)
    if not isinstance(value, dict):
        raise ctx.fail(f"invalid type: {_describe(value)}, expected struct {name}", path)
    props: dict[str, Any] = schema.get("properties", {})
    out: dict[str, Any] = {}
    for key, sub in value.items():
        if key not in props:
            continue
        if sub is None and _is_option(name, key, props[key], schema):
            continue  # Option<T>: null is None
        out[key] = _de_value(ctx, name, key, props[key], sub, (*path, key))
    for req in [*schema.get("required", []), *_EXTRA_REQUIRED.get(name, [])]:
        if req not in out and (name, req) not in _NOT_REQUIRED:
            raise ctx.fail(f"missing field `{req}`", path)
    if "pci_segment" in props and "pci_segment" not in out:
        out["pci_segment"] = 0  # PciDeviceCommonConfig: u16, serde default 0
    for key, default in _STRUCT_DEFAULTS.get(name, {}).items():
        if key in props and key not in out:
            ref = _ref_name(props[key])
            if ref is not None and isinstance(default, dict):
                out[key] = _de_struct(ctx, ref, default, ())
            else:
                out[key] = copy.deepcopy(default)
    for key, prop in props.items():
        if key not in out and isinstance(prop, dict) and "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
    return out


def _is_option(name: str, key: str, prop: Any, schema: dict[str, Any]) -> bool:
    """Whether the Rust field is an ``Option`` (``null`` accepted as None)."""
    if key in schema.get("required", []) or key == "pci_segment":
        return False
    if isinstance(prop, dict) and "default" in prop:
        return False
    return key not in _STRUCT_DEFAULTS.get(name, {})


def _de_enum(ctx: _Ctx, schema: dict[str, Any], value: Any, path: tuple[Any, ...]) -> Any:
    variants = [str(v) for v in schema["enum"]]
    if not isinstance(value, str):
        raise ctx.fail(f"invalid type: {_describe(value)}, expected variant identifier", path)
    if value not in variants:
        expected = ", ".join(f"`{v}`" for v in variants)
        raise ctx.fail(f"unknown variant `{value}`, expected one of {expected}", path)
    return value


def _de_value(
    ctx: _Ctx, owner: str, key: str, schema: Any, value: Any, path: tuple[Any, ...]
) -> Any:
    if not isinstance(schema, dict):
        return copy.deepcopy(value)
    ref = _ref_name(schema)
    if ref is not None:
        return _de_struct(ctx, ref, value, path)
    if "enum" in schema:
        return _de_enum(ctx, schema, value, path)
    typ = schema.get("type")
    if typ == "integer":
        rust = _RUST_INT.get((owner, key)) or _FORMAT_TYPES.get(schema.get("format", ""), "u64")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.fail(f"invalid type: {_describe(value)}, expected {rust}", path)
        lo, hi = _INT_RANGES[rust]
        if not lo <= value <= hi:
            raise ctx.fail(f"invalid value: integer `{value}`, expected {rust}", path)
        return value
    if typ == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ctx.fail(f"invalid type: {_describe(value)}, expected f64", path)
        return value
    if typ == "boolean":
        if not isinstance(value, bool):
            raise ctx.fail(f"invalid type: {_describe(value)}, expected a boolean", path)
        return value
    if typ == "string":
        if not isinstance(value, str):
            expected = "path string" if key in _PATH_FIELDS else "a string"
            raise ctx.fail(f"invalid type: {_describe(value)}, expected {expected}", path)
        return value
    if typ == "array":
        if not isinstance(value, list):
            raise ctx.fail(f"invalid type: {_describe(value)}, expected a sequence", path)
        items = schema.get("items", {})
        return [_de_value(ctx, owner, key, items, v, (*path, i)) for i, v in enumerate(value)]
    if typ == "object":
        if not isinstance(value, dict):
            raise ctx.fail(f"invalid type: {_describe(value)}, expected a map", path)
        add = schema.get("additionalProperties")
        if isinstance(add, dict):
            return {k: _de_value(ctx, owner, key, add, v, (*path, k)) for k, v in value.items()}
        return copy.deepcopy(value)
    return copy.deepcopy(value)


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
