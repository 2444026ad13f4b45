"""serde_json, as CHV uses it to read request bodies, for a model of the Rust types.

CHV decodes every body with ``serde_json::from_slice`` into ``#[derive(Deserialize)]``
types (serde_json 1.0.149-1.0.151, serde 1.0.228-229, without the
``float_roundtrip`` and ``arbitrary_precision`` features). Both fail on the first
problem they meet, in document order, with a message and the position where the
reader stood. :func:`from_slice` reads the same way, so it refuses what CHV
refuses with CHV's message, at CHV's column:

* the reader: whitespace, literals, numbers (integers that overflow ``u64`` and
  numbers with a fraction or exponent become ``f64`` by serde_json's own, not
  always correctly rounded, arithmetic; an infinite result is "number out of
  range"), strings (escapes, UTF-16 surrogate pairs, control characters, UTF-8
  checked once the string ends), a nesting limit of 128;
* the types: ``Option`` (``null`` is ``None``), integers with their Rust width,
  ``f64``, ``bool``, ``String`` and ``PathBuf``, ``Vec``, maps, unit enums
  (externally tagged), and structs as serde derive reads them: fields in any
  order, unknown fields skipped (still parsed), duplicates refused, missing
  fields defaulted or refused in declaration order, a JSON array read as the
  fields in order;
* ``#[serde(flatten)]``: the fields of a flattened struct are buffered while the
  map is read and checked after its closing brace, so their errors carry the
  position of that brace (CHV's ``PciDeviceCommonConfig`` in device configs).

Positions follow serde_json: ``error`` is the position after the last byte read,
``peek_error`` includes the byte looked at; an error a visitor raises gets the
position where the reader stood when the enclosing ``deserialize_*`` returned.
Messages quote the JSON error codes and serde's ``Unexpected``/``Expected``
wording (floats printed the way serde_json's ``zmij`` does).

The pieces, each in a module of its own: the Rust types read into
(:mod:`fakechv.serde_types`), the error and the wording of its messages
(:mod:`fakechv.serde_errors`), and the reader of JSON text below the types
(:mod:`fakechv.serde_read`). This module holds what serde's visitors ask of the
reader for each type, the flattened fields read back from buffered Content, and
:func:`from_slice`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fakechv.serde_errors import SerdeError, invalid_type, invalid_value, one_of
from fakechv.serde_read import DIGITS, U64_MAX, CMap, JsonReader, content_to_plain
from fakechv.serde_types import (
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

__all__ = ["from_slice"]

_INT_RANGES: dict[str, tuple[int, int]] = {
    "u8": (0, (1 << 8) - 1),
    "u16": (0, (1 << 16) - 1),
    "u32": (0, (1 << 32) - 1),
    "u64": (0, U64_MAX),
    "usize": (0, U64_MAX),
    "i8": (-(1 << 7), (1 << 7) - 1),
    "i16": (-(1 << 15), (1 << 15) - 1),
    "i32": (-(1 << 31), (1 << 31) - 1),
    "i64": (-(1 << 63), (1 << 63) - 1),
}


# --------------------------------------------------------------------------- typed values
class _Deserializer(JsonReader):
    def __init__(self, data: bytes, resolve: Callable[[str], Type]) -> None:
        super().__init__(data)
        self.resolve = resolve

    # invalid type of the next value ---------------------------------------
    def peek_invalid_type(self, exp: Type | str) -> SerdeError:
        c = self.peek()
        if c == 0x6E:
            self.i += 1
            self.ident(b"ull")
            err = invalid_type(None, exp)
        elif c == 0x74:
            self.i += 1
            self.ident(b"rue")
            err = invalid_type(True, exp)
        elif c == 0x66:
            self.i += 1
            self.ident(b"alse")
            err = invalid_type(False, exp)
        elif c == 0x2D or (c is not None and c in DIGITS):
            err = invalid_type(self.any_number(), exp)
        elif c == 0x22:
            self.i += 1
            err = invalid_type(self.string(), exp)
        elif c == 0x5B:
            err = invalid_type([], exp)
        elif c == 0x7B:
            err = invalid_type({}, exp)
        else:
            return self.peek_error("expected value")
        return self.fix(err)

    # typed values ---------------------------------------------------------
    def value(self, ty: Type) -> Any:
        if isinstance(ty, Ref):
            ty = self.resolve(ty.name)
        if isinstance(ty, Opt):
            c = self.ws()
            if c == 0x6E:
                self.i += 1
                self.ident(b"ull")
                return None
            return self.value(ty.inner)
        if isinstance(ty, Custom):  # its error gets the position of the enclosing map's end
            return ty.convert(self.value(ty.base))
        if isinstance(ty, Int | Float):
            return self._number_value(ty)
        if isinstance(ty, Bool):
            return self._bool_value()
        if isinstance(ty, Str):
            return self._str_value(ty)
        if isinstance(ty, Seq):
            return self._seq_value(ty)
        if isinstance(ty, MapOf):
            return self._map_value(ty)
        if isinstance(ty, Enum):
            return self._enum_value(ty)
        if isinstance(ty, Struct):
            return self._struct_value(ty)
        return content_to_plain(self.content())

    def _start(self) -> int:
        c = self.ws()
        if c is None:
            raise self.peek_error("EOF while parsing a value")
        return c

    def _number_value(self, ty: Int | Float) -> Any:
        c = self._start()
        if c == 0x2D:
            self.i += 1
            number = self.number(False)
        elif c in DIGITS:
            number = self.number(True)
        else:
            raise self.peek_invalid_type(ty)
        try:
            return _visit_number(number, ty)
        except SerdeError as err:
            raise self.fix(err) from None

    def _bool_value(self) -> bool:
        c = self._start()
        if c == 0x74:
            self.i += 1
            self.ident(b"rue")
            return True
        if c == 0x66:
            self.i += 1
            self.ident(b"alse")
            return False
        raise self.peek_invalid_type(Bool())

    def _str_value(self, ty: Str) -> str:
        c = self._start()
        if c != 0x22:
            raise self.peek_invalid_type(ty)
        self.i += 1
        return self.string()

    def _seq_value(self, ty: Seq) -> list[Any]:
        c = self._start()
        if c != 0x5B:
            raise self.peek_invalid_type(ty)
        self.enter()
        self.i += 1
        out: list[Any] = []
        err: SerdeError | None = None
        try:
            first = True
            while self.has_next_element(first):
                first = False
                out.append(self.value(ty.item))
        except SerdeError as exc:
            err = exc
        self.leave()
        end = self.end_seq()
        if err is not None or end is not None:
            raise self.fix(err or end)  # type: ignore[arg-type]
        return out

    def _map_value(self, ty: MapOf) -> dict[str, Any]:
        c = self._start()
        if c != 0x7B:
            raise self.peek_invalid_type(ty)
        self.enter()
        self.i += 1
        out: dict[str, Any] = {}
        err: SerdeError | None = None
        try:
            first = True
            while self.has_next_key(first):
                first = False
                key = self.key()
                self.colon()
                out[key] = self.value(ty.value)
        except SerdeError as exc:
            err = exc
        self.leave()
        end = self.end_map()
        if err is not None or end is not None:
            raise self.fix(err or end)  # type: ignore[arg-type]
        return out

    def _enum_value(self, ty: Enum) -> str:
        c = self.ws()
        if c == 0x22:
            self.i += 1
            name = self.string()
            if name not in ty.variants:
                raise self.fix(
                    SerdeError(f"unknown variant `{name}`, expected {one_of(ty.variants)}")
                )
            return name
        if c == 0x7B:
            self.enter()
            self.i += 1
            c = self.ws()
            if c == 0x7D:
                raise self.peek_error("expected value")
            if c is None:
                raise self.peek_error("EOF while parsing an object")
            if c != 0x22:
                raise self.peek_error("key must be a string")
            self.i += 1
            name = self.string()
            if name not in ty.variants:
                raise self.fix(
                    SerdeError(f"unknown variant `{name}`, expected {one_of(ty.variants)}")
                )
            self.colon()
            c = self._start()  # a unit variant's value is ()
            if c == 0x6E:
                self.i += 1
                self.ident(b"ull")
            else:
                raise self.peek_invalid_type("unit")
            self.leave()
            c = self.ws()
            if c == 0x7D:
                self.i += 1
                return name
            if c is None:
                raise self.error("EOF while parsing an object")
            raise self.error("expected value")
        if c is None:
            raise self.peek_error("EOF while parsing a value")
        raise self.peek_error("expected value")

    def _struct_value(self, ty: Struct) -> dict[str, Any]:
        c = self._start()
        if c == 0x7B:
            self.enter()
            self.i += 1
            err: SerdeError | None = None
            out: dict[str, Any] = {}
            try:
                out = self._visit_map(ty)
            except SerdeError as exc:
                err = exc
            self.leave()
            end = self.end_map()
            if err is not None or end is not None:
                raise self.fix(err or end)  # type: ignore[arg-type]
            return out
        if c == 0x5B and not ty.flattened:
            self.enter()
            self.i += 1
            err = None
            try:
                out = self._visit_seq(ty)
            except SerdeError as exc:
                err = exc
            self.leave()
            end = self.end_seq()
            if err is not None or end is not None:
                raise self.fix(err or end)  # type: ignore[arg-type]
            return out
        raise self.peek_invalid_type(ty)

    def _visit_map(self, ty: Struct) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        collected = CMap()
        first = True
        while self.has_next_key(first):
            first = False
            key = self.key()
            f = ty.lookup(key)
            if f is not None and f.flatten is None:
                if f.name in seen:
                    raise SerdeError(f"duplicate field `{f.name}`")
                self.colon()
                seen[f.name] = self.value(f.type)
            elif ty.flattened:
                self.colon()
                collected.append((key, self.content()))
            elif ty.deny_unknown:
                raise _unknown_field(key, ty)
            else:
                self.colon()
                self.ignore_value()
        return _finish_struct(ty, seen, collected, self.resolve)

    def _visit_seq(self, ty: Struct) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        first = True
        for index, f in enumerate(ty.fields):
            if self.has_next_element(first):
                first = False
                seen[f.name] = self.value(f.type)
            elif f.has_default:
                seen[f.name] = f.default_value()
            else:
                count = len(ty.fields)
                raise SerdeError(
                    f"invalid length {index}, expected struct {ty.name} "
                    f"with {count} element{'' if count == 1 else 's'}"
                )
        return _finish_struct(ty, seen, CMap(), self.resolve)


def _visit_number(number: int | float, ty: Int | Float) -> Any:
    """A primitive visitor taking the number serde_json parsed."""
    if isinstance(ty, Float):
        return float(number)
    if isinstance(number, float):
        raise invalid_type(float(number), ty)
    lo, hi = _INT_RANGES[ty.rust]
    if not lo <= number <= hi:
        raise invalid_value(number, ty)
    return number


# --------------------------------------------------------------------------- from Content
def _from_content(value: Any, ty: Type, resolve: Callable[[str], Type]) -> Any:
    """A flattened field's value, typed from the buffered Content (no positions)."""
    if isinstance(ty, Ref):
        ty = resolve(ty.name)
    if isinstance(ty, Opt):
        return None if value is None else _from_content(value, ty.inner, resolve)
    if isinstance(ty, Custom):
        return ty.convert(_from_content(value, ty.base, resolve))
    if isinstance(ty, Int | Float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid_type(content_to_plain(value), ty)
        return _visit_number(value, ty)
    if isinstance(ty, Bool):
        if not isinstance(value, bool):
            raise invalid_type(content_to_plain(value), ty)
        return value
    if isinstance(ty, Str):
        if not isinstance(value, str):
            raise invalid_type(content_to_plain(value), ty)
        return value
    if isinstance(ty, Seq):
        if not isinstance(value, list) or isinstance(value, CMap):
            raise invalid_type(content_to_plain(value), ty)
        return [_from_content(v, ty.item, resolve) for v in value]
    if isinstance(ty, MapOf):
        if not isinstance(value, CMap):
            raise invalid_type(content_to_plain(value), ty)
        return {k: _from_content(v, ty.value, resolve) for k, v in value}
    if isinstance(ty, Enum):
        payload: Any = None
        if isinstance(value, str):
            name = value
        elif isinstance(value, CMap):
            if len(value) != 1:
                raise SerdeError("invalid value: map, expected map with a single key")
            key, payload = value[0]
            if not isinstance(key, str):
                raise invalid_type(key, "variant identifier")
            name = key
        else:
            raise invalid_type(content_to_plain(value), "string or map")
        if name not in ty.variants:
            raise SerdeError(f"unknown variant `{name}`, expected {one_of(ty.variants)}")
        if payload is not None:  # a unit variant's value must be ()
            raise invalid_type(content_to_plain(payload), "unit")
        return name
    if isinstance(ty, Struct):
        if isinstance(value, CMap):
            seen: dict[str, Any] = {}
            collected = CMap()
            for key, sub in value:
                f = ty.lookup(key) if isinstance(key, str) else None
                if f is not None and f.flatten is None:
                    if f.name in seen:
                        raise SerdeError(f"duplicate field `{f.name}`")
                    seen[f.name] = _from_content(sub, f.type, resolve)
                elif ty.flattened:
                    collected.append((key, sub))
                elif ty.deny_unknown:
                    raise _unknown_field(key, ty)
            return _finish_struct(ty, seen, collected, resolve)
        raise invalid_type(content_to_plain(value), ty)
    return content_to_plain(value)


def _unknown_field(key: Any, ty: Struct) -> SerdeError:
    names = [f.name for f in ty.fields]
    wanted = one_of(names) if names else "there are no fields"
    return SerdeError(f"unknown field `{key}`, expected {wanted}")


def _finish_struct(
    ty: Struct, seen: dict[str, Any], collected: CMap, resolve: Callable[[str], Type]
) -> dict[str, Any]:
    """After the closing brace: missing own fields in declaration order, then each
    flattened struct from the buffered entries (serde derive's order)."""
    out: dict[str, Any] = {}
    groups: dict[str, list[Field]] = {}
    for f in ty.fields:
        if f.flatten is not None:
            groups.setdefault(f.flatten, []).append(f)
            continue
        if f.name in seen:
            value = seen[f.name]
        elif f.has_default:
            value = f.default_value()
        elif isinstance(_resolved(f.type, resolve), Opt):
            continue
        else:
            raise SerdeError(f"missing field `{f.name}`")
        if value is None and ty.drop_none and isinstance(_resolved(f.type, resolve), Opt):
            continue
        out[f.name] = value
    for group in groups.values():
        names = {key: f for f in group for key in (f.name, *f.aliases)}
        taken: dict[str, Any] = {}
        for index, (key, sub) in enumerate(collected):
            if sub is _TAKEN or not isinstance(key, str) or key not in names:
                continue
            f = names[key]
            collected[index] = (key, _TAKEN)
            if f.name in taken:
                raise SerdeError(f"duplicate field `{f.name}`")
            taken[f.name] = _from_content(sub, f.type, resolve)
        for f in group:
            if f.name in taken:
                value = taken[f.name]
            elif f.has_default:
                value = f.default_value()
            elif isinstance(_resolved(f.type, resolve), Opt):
                continue
            else:
                raise SerdeError(f"missing field `{f.name}`")
            if value is None and ty.drop_none and isinstance(_resolved(f.type, resolve), Opt):
                continue
            out[f.name] = value
    return out


_TAKEN = object()


def _resolved(ty: Type, resolve: Callable[[str], Type]) -> Type:
    return resolve(ty.name) if isinstance(ty, Ref) else ty


def from_slice(data: bytes, ty: Type, resolve: Callable[[str], Type] | None = None) -> Any:
    """``serde_json::from_slice::<ty>(data)``: the value, or :class:`SerdeError`."""

    def no_refs(name: str) -> Type:
        raise KeyError(f"no type named {name!r}")

    reader = _Deserializer(data, resolve or no_refs)
    value = reader.value(ty)
    if reader.ws() is not None:
        raise reader.peek_error("trailing characters")
    return value
