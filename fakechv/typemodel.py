"""How fakechv writes down the Rust types of CHV's source, and reads and writes JSON
through them.

The release tables (:mod:`fakechv.configtypes`) are written in this vocabulary:

* :func:`S` declares a struct: its fields in declaration order (what serde
  derive iterates), and whether unset options are left out when it is written
  (``#[serde_with::skip_serializing_none]``; without it they are ``null``);
* :func:`F` declares a field: its serde name, its Rust type as written in the
  source (``Option<Box<[u16]>>``, ``PathBuf``, ``MacAddr``, a struct or enum
  name), its ``#[serde(default)]`` (the value it takes; :data:`REQUIRED` when
  there is none), ``flatten``, ``alias`` and the ``skip_serializing_if`` of a
  ``false`` bool;
* :func:`E` declares a unit-variant enum and its ``#[default]`` variant;
* :func:`release` makes a release's table as a patch of another's.

Types whose Deserialize is hand-written are named in the tables by their Rust name and
modelled here (CUSTOM below). :class:`TypeModel` turns one release's table into the
types of :mod:`fakechv.serde`: ``read`` is ``serde_json::from_slice`` of a body, ``write``
the JSON serde_json writes back (vm.info's config).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fakechv.jsoncopy import copy_json
from fakechv.serde_errors import SerdeError
from fakechv.serde_types import (
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
    Str,
    Struct,
    Type,
)

__all__ = [
    "RANDOM_DRAWS",
    "RANDOM_MAC",
    "REQUIRED",
    "E",
    "EnumDef",
    "F",
    "FieldDef",
    "S",
    "StructDef",
    "TypeDef",
    "TypeModel",
    "release",
    "without",
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


def without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``d`` less ``keys`` (a default of a release whose struct lacks those fields)."""
    return {k: v for k, v in d.items() if k not in keys}


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


#: how many random values the defaults have drawn (a reading that drew one is not
#: repeatable: :func:`fakechv.config.deserialize_bytes` keeps only repeatable ones)
RANDOM_DRAWS = [0]


def _random_mac() -> str:
    """``MacAddr::local_random``: random bytes, the first one 0x2e."""
    RANDOM_DRAWS[0] += 1
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
        self._parsed: dict[str, Type] = {}
        self._plans: dict[str, tuple[_FieldPlan, ...]] = {}
        self._writers: dict[Type, _Writer] = {}

    def parse(self, rust: str) -> Type:
        """The serde type of a Rust type as written in the tables (types are immutable, so
        each spelling is parsed once)."""
        ty = self._parsed.get(rust)
        if ty is None:
            ty = self._parsed[rust] = self._parse(rust)
        return ty

    def _parse(self, rust: str) -> Type:
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
        for f, inner in self._members(d):
            if inner is not None:
                fields.extend(self._field(sub, group=f.name) for sub in inner.fields)
            else:
                fields.append(self._field(f, group=None))
        return Struct(d.name, tuple(fields), deny_unknown=d.deny_unknown)

    def _members(self, d: StructDef) -> Iterator[tuple[FieldDef, StructDef | None]]:
        """The fields serde reads and writes (``skip`` ones left out), each with the struct
        it flattens (None for a plain field)."""
        for f in d.fields:
            if f.skip:
                continue
            inner = self.defs[f.rust] if f.flatten else None
            assert inner is None or isinstance(inner, StructDef)
            yield f, inner

    def _field(self, f: FieldDef, *, group: str | None) -> Field:
        ty = self.parse(f.rust)
        default: Any = NO_DEFAULT
        if f.default is RANDOM_MAC:
            default = _random_mac
        elif f.default is not REQUIRED:
            value = f.default
            default = lambda v=value: copy_json(v)  # noqa: E731 - a default factory
        return Field(f.name, ty, default, flatten=group, aliases=f.alias)

    # ------------------------------------------------------------------ reading
    def read(self, name: str, body: bytes) -> Any:
        """``serde_json::from_slice::<name>(body)`` (raises
        :class:`fakechv.serde_errors.SerdeError`)."""
        from fakechv.serde import from_slice

        return from_slice(body, Ref(name), self.resolve)

    # ------------------------------------------------------------------ writing
    def write(self, name: str, value: Any) -> Any:
        """The JSON serde_json writes for ``value`` read as ``name`` (vm.info's config):
        fields in declaration order, flattened structs inline, unset options left out
        (``skip_serializing_none``) or ``null``, ``skip_false`` bools left out when false."""
        ty = self.parse(name) if name not in self.defs else Ref(name)
        return self._writer(ty)(value)

    def _writer(self, ty: Type) -> _Writer:
        """The function that writes a value of type ``ty`` (made once per type: types are
        frozen, so equal ones share it)."""
        writer = self._writers.get(ty)
        if writer is None:
            writer = self._writers[ty] = self._make_writer(ty)
        return writer

    def _make_writer(self, ty: Type) -> _Writer:
        if isinstance(ty, Ref):
            d = self.defs[ty.name]
            if isinstance(d, EnumDef):
                return _as_is
            return lambda value: self._write_struct(d, value)
        if isinstance(ty, Opt):
            inner = self._writer(ty.inner)
            return lambda value: None if value is None else inner(value)
        if isinstance(ty, Seq):
            item = self._writer(ty.item)
            return lambda value: (
                [item(v) for v in value] if isinstance(value, list) else copy_json(value)
            )
        if isinstance(ty, MapOf):
            entry = self._writer(ty.value)
            return lambda value: (
                {k: entry(v) for k, v in value.items()}
                if isinstance(value, dict)
                else copy_json(value)
            )
        return copy_json

    def _write_struct(self, d: StructDef, value: Any) -> Any:
        if not isinstance(value, dict):
            return copy_json(value)
        out: dict[str, Any] = {}
        for name, writer, optional, skip_false, inner in self._plan(d):
            if inner is not None:
                out.update(self._write_struct(inner, value))
                continue
            v = value.get(name)
            if v is None:
                if optional:
                    if not d.skip_none:
                        out[name] = None
                    continue
                if name not in value:
                    continue  # not set by the reader: nothing CHV would have
            if skip_false and v is False:
                continue
            out[name] = writer(v)
        return out

    def _plan(self, d: StructDef) -> tuple[_FieldPlan, ...]:
        """What ``_write_struct`` needs of each field of ``d``, worked out once."""
        plan = self._plans.get(d.name)
        if plan is None:
            steps: list[_FieldPlan] = []
            for f, inner in self._members(d):
                if inner is not None:
                    steps.append((f.name, _as_is, False, False, inner))
                    continue
                ty = self.parse(f.rust)
                steps.append((f.name, self._writer(ty), isinstance(ty, Opt), f.skip_false, None))
            plan = self._plans[d.name] = tuple(steps)
        return plan


def _as_is(value: Any) -> Any:
    return value


_Writer = Callable[[Any], Any]
#: one field as written: serde name, its writer, is an Option, skip_false, flattened struct
_FieldPlan = tuple[str, _Writer, bool, bool, StructDef | None]
