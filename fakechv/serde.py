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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NO_DEFAULT",
    "AnyValue",
    "Bool",
    "Custom",
    "Enum",
    "Field",
    "Float",
    "Int",
    "MapOf",
    "Opt",
    "Ref",
    "Seq",
    "SerdeError",
    "Str",
    "Struct",
    "Type",
    "format_float",
    "from_slice",
]

RECURSION_LIMIT = 128
_WS = b" \n\t\r"
_DIGITS = b"0123456789"
#: serde_json's POW10 table: 1e0 .. 1e308, each the correctly rounded double
_POW10 = [float(f"1e{i}") for i in range(309)]
_U64_MAX = (1 << 64) - 1
_INT_RANGES: dict[str, tuple[int, int]] = {
    "u8": (0, (1 << 8) - 1),
    "u16": (0, (1 << 16) - 1),
    "u32": (0, (1 << 32) - 1),
    "u64": (0, _U64_MAX),
    "usize": (0, _U64_MAX),
    "i8": (-(1 << 7), (1 << 7) - 1),
    "i16": (-(1 << 15), (1 << 15) - 1),
    "i32": (-(1 << 31), (1 << 31) - 1),
    "i64": (-(1 << 63), (1 << 63) - 1),
}


class SerdeError(Exception):
    """What serde_json says; ``str()`` is its Display (``... at line L column C``)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line == 0:
            return self.message
        return f"{self.message} at line {self.line} column {self.column}"

    @property
    def positioned(self) -> bool:
        return self.line != 0


# --------------------------------------------------------------------------- types
class Type:
    """A Rust type serde deserializes; ``expecting`` is its visitor's wording."""

    expecting = "a value"


@dataclass(frozen=True)
class Int(Type):
    rust: str = "u64"
    #: the visitor's wording when it is not the type name ("a nonzero u64")
    expect: str | None = None

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return self.expect or self.rust


@dataclass(frozen=True)
class Float(Type):
    expecting = "f64"


@dataclass(frozen=True)
class Bool(Type):
    expecting = "a boolean"


@dataclass(frozen=True)
class Str(Type):
    """``String`` ("a string") or ``PathBuf`` ("path string")."""

    path: bool = False
    #: the visitor's wording when it is not a plain string's ("IP address")
    expect: str | None = None

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return self.expect or ("path string" if self.path else "a string")


@dataclass(frozen=True)
class Opt(Type):
    inner: Type

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return "option"


@dataclass(frozen=True)
class Seq(Type):
    item: Type
    expecting = "a sequence"


@dataclass(frozen=True)
class MapOf(Type):
    value: Type
    expecting = "a map"


@dataclass(frozen=True)
class AnyValue(Type):
    """``serde_json::Value``: any JSON, kept as is."""

    expecting = "any valid JSON value"


@dataclass(frozen=True)
class Custom(Type):
    """A type with a hand-written ``Deserialize``: read as ``base``, then ``convert``
    turns the value into the stored one or raises an unpositioned :class:`SerdeError`
    (a custom error: the enclosing struct, map or sequence positions it where the
    reader stands once it is closed)."""

    name: str
    base: Type
    convert: Callable[[Any], Any] = field(compare=False)

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return self.base.expecting


@dataclass(frozen=True)
class Enum(Type):
    """A unit-variant enum, externally tagged (``"Tty"`` or ``{"Tty": null}``)."""

    name: str
    variants: tuple[str, ...]

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return f"enum {self.name}"


_MISSING = object()
#: a :class:`Field` without ``#[serde(default)]``
NO_DEFAULT: Any = _MISSING


@dataclass(frozen=True)
class Field:
    """One struct field: its name, type, and what a missing field becomes.

    ``default`` is the value of ``#[serde(default)]`` (a callable is called);
    without one a missing ``Option`` is ``None`` and anything else is an error.
    ``flatten`` names the flattened struct (``#[serde(flatten)]``) the field
    belongs to, if any; fields of one flattened struct share a name.
    """

    name: str
    type: Type
    default: Any = _MISSING
    flatten: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    def default_value(self) -> Any:
        value = self.default
        return value() if callable(value) else value


@dataclass(frozen=True)
class Struct(Type):
    """A struct with named fields (declaration order). ``resolve`` turns a field's
    ``Ref`` name into its type lazily, so the model may be recursive."""

    name: str
    fields: tuple[Field, ...]
    #: values of absent Option fields are dropped from the result (not None)
    drop_none: bool = True
    #: ``#[serde(deny_unknown_fields)]``
    deny_unknown: bool = False
    _index: dict[str, Field] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for f in self.fields:
            for key in (f.name, *f.aliases):
                self._index.setdefault(key, f)

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return f"struct {self.name}"

    def lookup(self, key: str) -> Field | None:
        return self._index.get(key)

    @property
    def flattened(self) -> bool:
        return any(f.flatten is not None for f in self.fields)


@dataclass(frozen=True)
class Ref(Type):
    """A named type resolved on use (see :func:`from_slice`'s ``resolve``)."""

    name: str


# --------------------------------------------------------------------------- messages
def format_float(value: float) -> str:
    """A double as serde_json's ``zmij`` prints it: the shortest digits, fixed
    notation for decimal exponents -5..15 (``100.0``, ``0.00001``), else
    ``1e+20`` / ``1.5e-7``; ``inf``, ``-inf``, ``NaN``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0.0"
    text = repr(abs(value))  # the shortest digits that read back as the same double
    if "e" in text:
        significand, _, exp_part = text.partition("e")
        digits, exponent = significand.replace(".", ""), int(exp_part)
    else:
        whole, _, frac = text.partition(".")
        if whole != "0":
            digits, exponent = whole + frac, len(whole) - 1
        else:
            stripped = frac.lstrip("0")
            digits, exponent = stripped, -(len(frac) - len(stripped)) - 1
    digits = digits.rstrip("0") or "0"
    if -5 <= exponent <= 15:
        if len(digits) - 1 <= exponent:
            return sign + digits + "0" * (exponent + 1 - len(digits)) + ".0"
        if exponent >= 0:
            return sign + digits[: exponent + 1] + "." + digits[exponent + 1 :]
        return sign + "0." + "0" * (-exponent - 1) + digits
    body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{body}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def _debug_str(text: str) -> str:
    """Rust's ``{:?}`` of a str."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            out.append(f"\\u{{{code:x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _unexpected(value: Any) -> str:
    """serde's ``Unexpected`` as serde_json's error type displays it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{format_float(value)}`"
    if isinstance(value, str):
        return f"string {_debug_str(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def _one_of(names: Sequence[str]) -> str:
    if not names:
        return "there are no variants"
    if len(names) == 1:
        return f"`{names[0]}`"
    if len(names) == 2:
        return f"`{names[0]}` or `{names[1]}`"
    return "one of " + ", ".join(f"`{n}`" for n in names)


def _invalid_type(value: Any, exp: Type | str) -> SerdeError:
    wanted = exp if isinstance(exp, str) else exp.expecting
    return SerdeError(f"invalid type: {_unexpected(value)}, expected {wanted}")


def _invalid_value(value: Any, exp: Type | str) -> SerdeError:
    wanted = exp if isinstance(exp, str) else exp.expecting
    return SerdeError(f"invalid value: {_unexpected(value)}, expected {wanted}")


# --------------------------------------------------------------------------- content
class CMap(list[tuple[Any, Any]]):
    """serde's ``Content::Map``: entries in order, duplicates kept."""


class _Float(float):
    """A Content number that was read as a float (``1.0`` is not ``1``)."""


def _content_to_plain(value: Any) -> Any:
    if isinstance(value, CMap):
        out: dict[Any, Any] = {}
        for k, v in value:  # serde_json::Value: a repeated key keeps its last value
            out[k] = _content_to_plain(v)
        return out
    if isinstance(value, list):
        return [_content_to_plain(v) for v in value]
    if isinstance(value, _Float):
        return float(value)
    return value


# --------------------------------------------------------------------------- reader
class _Reader:
    def __init__(self, data: bytes, resolve: Callable[[str], Type]) -> None:
        self.data = data
        self.n = len(data)
        self.i = 0
        self.depth = RECURSION_LIMIT
        self.resolve = resolve

    # positions ----------------------------------------------------------
    def _position(self, index: int) -> tuple[int, int]:
        start = self.data.rfind(b"\n", 0, index) + 1
        return self.data.count(b"\n", 0, start) + 1, index - start

    def error(self, message: str) -> SerdeError:
        return SerdeError(message, *self._position(self.i))

    def peek_error(self, message: str) -> SerdeError:
        return SerdeError(message, *self._position(min(self.n, self.i + 1)))

    def fix(self, err: SerdeError) -> SerdeError:
        if not err.positioned:
            err.line, err.column = self._position(self.i)
        return err

    # bytes --------------------------------------------------------------
    def peek(self) -> int | None:
        return self.data[self.i] if self.i < self.n else None

    def ws(self) -> int | None:
        data, i, n = self.data, self.i, self.n
        while i < n and data[i] in _WS:
            i += 1
        self.i = i
        return data[i] if i < n else None

    def next(self) -> int | None:
        if self.i < self.n:
            self.i += 1
            return self.data[self.i - 1]
        return None

    def ident(self, rest: bytes) -> None:
        for expected in rest:
            got = self.next()
            if got is None:
                raise self.error("EOF while parsing a value")
            if got != expected:
                raise self.error("expected ident")

    def enter(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            raise self.peek_error("recursion limit exceeded")

    def leave(self) -> None:
        self.depth += 1

    # numbers ------------------------------------------------------------
    def number(self, positive: bool) -> int | float:
        """``parse_integer``: an int (U64/I64) or a float (F64)."""
        first = self.next()
        if first is None:
            raise self.error("EOF while parsing a value")
        if first == 0x30:  # '0'
            nxt = self.peek()
            if nxt is not None and nxt in _DIGITS:
                raise self.peek_error("invalid number")
            return self._after_int(positive, 0)
        if first not in _DIGITS:
            raise self.error("invalid number")
        significand = first - 0x30
        while True:
            c = self.peek()
            if c is None or c not in _DIGITS:
                return self._after_int(positive, significand)
            digit = c - 0x30
            if significand >= _U64_MAX // 10 and (
                significand > _U64_MAX // 10 or digit > _U64_MAX % 10
            ):
                return self._long_integer(positive, significand)
            self.i += 1
            significand = significand * 10 + digit

    def _after_int(self, positive: bool, significand: int) -> int | float:
        c = self.peek()
        if c == 0x2E:  # '.'
            return _Float(self._decimal(positive, significand, 0))
        if c in (0x65, 0x45):  # e E
            return _Float(self._exponent(positive, significand, 0))
        if positive:
            return significand
        if significand == 0 or significand > 1 << 63:
            return _Float(-float(significand))
        return -significand

    def _long_integer(self, positive: bool, significand: int) -> float:
        exponent = 0
        while True:
            c = self.peek()
            if c is not None and c in _DIGITS:
                self.i += 1
                exponent += 1
            elif c == 0x2E:
                return self._decimal(positive, significand, exponent)
            elif c in (0x65, 0x45):
                return self._exponent(positive, significand, exponent)
            else:
                return self._from_parts(positive, significand, exponent)

    def _decimal(self, positive: bool, significand: int, before: int) -> float:
        self.i += 1  # '.'
        after = 0
        while True:
            c = self.peek()
            if c is None or c not in _DIGITS:
                break
            digit = c - 0x30
            if significand >= _U64_MAX // 10 and (
                significand > _U64_MAX // 10 or digit > _U64_MAX % 10
            ):
                while (c := self.peek()) is not None and c in _DIGITS:
                    self.i += 1
                if self.peek() in (0x65, 0x45):
                    return self._exponent(positive, significand, before + after)
                return self._from_parts(positive, significand, before + after)
            self.i += 1
            significand = significand * 10 + digit
            after -= 1
        if after == 0:
            if self.peek() is None:
                raise self.peek_error("EOF while parsing a value")
            raise self.peek_error("invalid number")
        if self.peek() in (0x65, 0x45):
            return self._exponent(positive, significand, before + after)
        return self._from_parts(positive, significand, before + after)

    def _exponent(self, positive: bool, significand: int, starting: int) -> float:
        self.i += 1  # 'e'
        positive_exp = True
        c = self.peek()
        if c == 0x2B:
            self.i += 1
        elif c == 0x2D:
            self.i += 1
            positive_exp = False
        first = self.next()
        if first is None:
            raise self.error("EOF while parsing a value")
        if first not in _DIGITS:
            raise self.error("invalid number")
        exp = first - 0x30
        while (c := self.peek()) is not None and c in _DIGITS:
            self.i += 1
            digit = c - 0x30
            if exp > (2**31 - 1 - digit) // 10:
                if significand != 0 and positive_exp:
                    raise self.error("number out of range")
                while (c := self.peek()) is not None and c in _DIGITS:
                    self.i += 1
                return 0.0 if positive else -0.0
            exp = exp * 10 + digit
        final = starting + exp if positive_exp else starting - exp
        final = max(-(2**31), min(2**31 - 1, final))
        return self._from_parts(positive, significand, final)

    def _from_parts(self, positive: bool, significand: int, exponent: int) -> float:
        """serde_json's ``f64_from_parts`` without ``float_roundtrip``."""
        f = float(significand)
        while True:
            magnitude = abs(exponent)
            if magnitude < len(_POW10):
                pow10 = _POW10[magnitude]
                if exponent >= 0:
                    f *= pow10
                    if math.isinf(f):
                        raise self.error("number out of range")
                else:
                    f /= pow10
                break
            if f == 0.0:
                break
            if exponent >= 0:
                raise self.error("number out of range")
            f /= 1e308
            exponent += 308
        return f if positive else -f

    def any_number(self) -> int | float:
        if self.peek() == 0x2D:
            self.i += 1
            return self.number(False)
        return self.number(True)

    # strings ------------------------------------------------------------
    def string(self) -> str:
        """``parse_str`` after the opening quote."""
        data, n = self.data, self.n
        out = bytearray()
        start = self.i
        while True:
            i = self.i
            while i < n:
                b = data[i]
                if b == 0x22 or b == 0x5C or b < 0x20:
                    break
                i += 1
            self.i = i
            if i == n:
                raise self.error("EOF while parsing a string")
            b = data[i]
            if b == 0x22:
                out += data[start:i]
                self.i += 1
                try:
                    return out.decode("utf-8")
                except UnicodeDecodeError:
                    raise self.error("invalid unicode code point") from None
            if b == 0x5C:
                out += data[start:i]
                self.i += 1
                self._escape(out)
                start = self.i
                continue
            self.i += 1
            raise self.error("control character (\\u0000-\\u001F) found while parsing a string")

    def _escape(self, out: bytearray) -> None:
        ch = self.next()
        if ch is None:
            raise self.error("EOF while parsing a string")
        simple = {0x22: b'"', 0x5C: b"\\", 0x2F: b"/", 0x62: b"\b", 0x66: b"\f"}
        simple.update({0x6E: b"\n", 0x72: b"\r", 0x74: b"\t"})
        if ch in simple:
            out += simple[ch]
            return
        if ch != 0x75:  # 'u'
            raise self.error("invalid escape")
        n = self._hex4()
        if 0xDC00 <= n <= 0xDFFF:
            raise self.error("lone leading surrogate in hex escape")
        if not 0xD800 <= n <= 0xDBFF:
            out += chr(n).encode("utf-8", "surrogatepass")
            return
        if self.peek() is None:
            raise self.error("EOF while parsing a string")
        if self.peek() != 0x5C:
            self.i += 1
            raise self.error("unexpected end of hex escape")
        self.i += 1
        if self.peek() is None:
            raise self.error("EOF while parsing a string")
        if self.peek() != 0x75:
            self.i += 1
            raise self.error("unexpected end of hex escape")
        self.i += 1
        n2 = self._hex4()
        if not 0xDC00 <= n2 <= 0xDFFF:
            raise self.error("lone leading surrogate in hex escape")
        out += chr((((n - 0xD800) << 10) | (n2 - 0xDC00)) + 0x10000).encode("utf-8")

    def _hex4(self) -> int:
        if self.n - self.i < 4:
            self.i = self.n
            raise self.error("EOF while parsing a string")
        chunk = self.data[self.i : self.i + 4]
        self.i += 4
        try:
            text = chunk.decode("ascii")
            if not all(c in "0123456789abcdefABCDEF" for c in text):
                raise ValueError
            return int(text, 16)
        except ValueError:
            raise self.error("invalid escape") from None

    def ignore_str(self) -> None:
        data, n = self.data, self.n
        while True:
            i = self.i
            while i < n:
                b = data[i]
                if b == 0x22 or b == 0x5C or b < 0x20:
                    break
                i += 1
            self.i = i
            if i == n:
                raise self.error("EOF while parsing a string")
            b = data[i]
            if b == 0x22:
                self.i += 1
                return
            if b == 0x5C:
                self.i += 1
                ch = self.next()
                if ch is None:
                    raise self.error("EOF while parsing a string")
                if ch == 0x75:
                    self._hex4()
                elif ch not in b'"\\/bfnrt':
                    raise self.error("invalid escape")
                continue
            raise self.error("control character (\\u0000-\\u001F) found while parsing a string")

    # skipping (IgnoredAny) ------------------------------------------------
    def ignore_value(self) -> None:
        """``ignore_value``: syntax checked, no nesting limit."""
        stack: list[int] = []
        enclosing: int | None = None
        while True:
            peek = self.ws()
            if peek is None:
                raise self.peek_error("EOF while parsing a value")
            frame: int | None = None
            if peek == 0x6E:
                self.i += 1
                self.ident(b"ull")
            elif peek == 0x74:
                self.i += 1
                self.ident(b"rue")
            elif peek == 0x66:
                self.i += 1
                self.ident(b"alse")
            elif peek == 0x2D:
                self.i += 1
                self._ignore_integer()
            elif peek in _DIGITS:
                self._ignore_integer()
            elif peek == 0x22:
                self.i += 1
                self.ignore_str()
            elif peek in (0x5B, 0x7B):
                if enclosing is not None:
                    stack.append(enclosing)
                    enclosing = None
                self.i += 1
                frame = peek
            else:
                raise self.peek_error("expected value")
            if frame is not None:
                accept_comma = False
            elif enclosing is not None:
                frame, enclosing, accept_comma = enclosing, None, True
            elif stack:
                frame, accept_comma = stack.pop(), True
            else:
                return
            while True:
                c = self.ws()
                if c == 0x2C and accept_comma:
                    self.i += 1
                    break
                if (c == 0x5D and frame == 0x5B) or (c == 0x7D and frame == 0x7B):
                    pass
                elif c is not None:
                    if accept_comma:
                        raise self.peek_error(
                            "expected `,` or `]`" if frame == 0x5B else "expected `,` or `}`"
                        )
                    break
                else:
                    raise self.peek_error(
                        "EOF while parsing a list"
                        if frame == 0x5B
                        else "EOF while parsing an object"
                    )
                self.i += 1
                if not stack:
                    return
                frame = stack.pop()
                accept_comma = True
            if frame == 0x7B:
                c = self.ws()
                if c == 0x22:
                    self.i += 1
                elif c is None:
                    raise self.peek_error("EOF while parsing an object")
                else:
                    raise self.peek_error("key must be a string")
                self.ignore_str()
                c = self.ws()
                if c == 0x3A:
                    self.i += 1
                elif c is None:
                    raise self.peek_error("EOF while parsing an object")
                else:
                    raise self.peek_error("expected `:`")
            enclosing = frame

    def _ignore_integer(self) -> None:
        first = self.next()
        if first == 0x30:
            c = self.peek()
            if c is not None and c in _DIGITS:
                raise self.peek_error("invalid number")
        elif first is not None and first in _DIGITS:
            while (c := self.peek()) is not None and c in _DIGITS:
                self.i += 1
        else:
            raise self.error("invalid number")
        c = self.peek()
        if c == 0x2E:
            self.i += 1
            seen = False
            while (c := self.peek()) is not None and c in _DIGITS:
                self.i += 1
                seen = True
            if not seen:
                raise self.peek_error("invalid number")
            c = self.peek()
        if c in (0x65, 0x45):
            self.i += 1
            if self.peek() in (0x2B, 0x2D):
                self.i += 1
            first = self.next()
            if first is None or first not in _DIGITS:
                raise self.error("invalid number")
            while (c := self.peek()) is not None and c in _DIGITS:
                self.i += 1

    # maps and sequences --------------------------------------------------
    def has_next_key(self, first: bool) -> bool:
        c = self.ws()
        if c is None:
            raise self.peek_error("EOF while parsing an object")
        if c == 0x7D:
            return False
        if first:
            if c == 0x22:
                return True
            raise self.peek_error("key must be a string")
        if c != 0x2C:
            raise self.peek_error("expected `,` or `}`")
        self.i += 1
        c = self.ws()
        if c == 0x22:
            return True
        if c == 0x7D:
            raise self.peek_error("trailing comma")
        if c is None:
            raise self.peek_error("EOF while parsing a value")
        raise self.peek_error("key must be a string")

    def key(self) -> str:
        self.i += 1  # the quote has_next_key saw
        return self.string()

    def colon(self) -> None:
        c = self.ws()
        if c == 0x3A:
            self.i += 1
            return
        if c is None:
            raise self.peek_error("EOF while parsing an object")
        raise self.peek_error("expected `:`")

    def has_next_element(self, first: bool) -> bool:
        c = self.ws()
        if c is None:
            raise self.peek_error("EOF while parsing a list")
        if c == 0x5D:
            return False
        if first:
            return True
        if c != 0x2C:
            raise self.peek_error("expected `,` or `]`")
        self.i += 1
        c = self.ws()
        if c == 0x5D:
            raise self.peek_error("trailing comma")
        if c is None:
            raise self.peek_error("EOF while parsing a value")
        return True

    def end_map(self) -> SerdeError | None:
        c = self.ws()
        if c == 0x7D:
            self.i += 1
            return None
        if c == 0x2C:
            return self.peek_error("trailing comma")
        if c is None:
            return self.peek_error("EOF while parsing an object")
        return self.peek_error("trailing characters")

    def end_seq(self) -> SerdeError | None:
        c = self.ws()
        if c == 0x5D:
            self.i += 1
            return None
        if c == 0x2C:
            self.i += 1
            if self.ws() == 0x5D:
                return self.peek_error("trailing comma")
            return self.peek_error("trailing characters")
        if c is None:
            return self.peek_error("EOF while parsing a list")
        return self.peek_error("trailing characters")

    # invalid type of the next value ---------------------------------------
    def peek_invalid_type(self, exp: Type | str) -> SerdeError:
        c = self.peek()
        if c == 0x6E:
            self.i += 1
            self.ident(b"ull")
            err = _invalid_type(None, exp)
        elif c == 0x74:
            self.i += 1
            self.ident(b"rue")
            err = _invalid_type(True, exp)
        elif c == 0x66:
            self.i += 1
            self.ident(b"alse")
            err = _invalid_type(False, exp)
        elif c == 0x2D or (c is not None and c in _DIGITS):
            err = _invalid_type(self.any_number(), exp)
        elif c == 0x22:
            self.i += 1
            err = _invalid_type(self.string(), exp)
        elif c == 0x5B:
            err = _invalid_type([], exp)
        elif c == 0x7B:
            err = _invalid_type({}, exp)
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
        return _content_to_plain(self.content())

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
        elif c in _DIGITS:
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
                    SerdeError(f"unknown variant `{name}`, expected {_one_of(ty.variants)}")
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
                    SerdeError(f"unknown variant `{name}`, expected {_one_of(ty.variants)}")
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

    # Content (deserialize_any) ---------------------------------------------
    def content(self) -> Any:
        c = self.ws()
        if c is None:
            raise self.peek_error("EOF while parsing a value")
        if c == 0x6E:
            self.i += 1
            self.ident(b"ull")
            return None
        if c == 0x74:
            self.i += 1
            self.ident(b"rue")
            return True
        if c == 0x66:
            self.i += 1
            self.ident(b"alse")
            return False
        if c == 0x2D or c in _DIGITS:
            return self.any_number()
        if c == 0x22:
            self.i += 1
            return self.string()
        if c == 0x5B:
            self.enter()
            self.i += 1
            items: list[Any] = []
            err: SerdeError | None = None
            try:
                first = True
                while self.has_next_element(first):
                    first = False
                    items.append(self.content())
            except SerdeError as exc:
                err = exc
            self.leave()
            end = self.end_seq()
            if err is not None or end is not None:
                raise self.fix(err or end)  # type: ignore[arg-type]
            return items
        if c == 0x7B:
            self.enter()
            self.i += 1
            entries = CMap()
            err = None
            try:
                first = True
                while self.has_next_key(first):
                    first = False
                    key = self.key()
                    self.colon()
                    entries.append((key, self.content()))
            except SerdeError as exc:
                err = exc
            self.leave()
            end = self.end_map()
            if err is not None or end is not None:
                raise self.fix(err or end)  # type: ignore[arg-type]
            return entries
        raise self.peek_error("expected value")


def _visit_number(number: int | float, ty: Int | Float) -> Any:
    """A primitive visitor taking the number serde_json parsed."""
    if isinstance(ty, Float):
        return float(number)
    if isinstance(number, float):
        raise _invalid_type(float(number), ty)
    lo, hi = _INT_RANGES[ty.rust]
    if not lo <= number <= hi:
        raise _invalid_value(number, ty)
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
            raise _invalid_type(_content_to_plain(value), ty)
        return _visit_number(value, ty)
    if isinstance(ty, Bool):
        if not isinstance(value, bool):
            raise _invalid_type(_content_to_plain(value), ty)
        return value
    if isinstance(ty, Str):
        if not isinstance(value, str):
            raise _invalid_type(_content_to_plain(value), ty)
        return value
    if isinstance(ty, Seq):
        if not isinstance(value, list) or isinstance(value, CMap):
            raise _invalid_type(_content_to_plain(value), ty)
        return [_from_content(v, ty.item, resolve) for v in value]
    if isinstance(ty, MapOf):
        if not isinstance(value, CMap):
            raise _invalid_type(_content_to_plain(value), ty)
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
                raise _invalid_type(key, "variant identifier")
            name = key
        else:
            raise _invalid_type(_content_to_plain(value), "string or map")
        if name not in ty.variants:
            raise SerdeError(f"unknown variant `{name}`, expected {_one_of(ty.variants)}")
        if payload is not None:  # a unit variant's value must be ()
            raise _invalid_type(_content_to_plain(payload), "unit")
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
        raise _invalid_type(_content_to_plain(value), ty)
    return _content_to_plain(value)


def _unknown_field(key: Any, ty: Struct) -> SerdeError:
    names = [f.name for f in ty.fields]
    wanted = _one_of(names) if names else "there are no fields"
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

    reader = _Reader(data, resolve or no_refs)
    value = reader.value(ty)
    if reader.ws() is not None:
        raise reader.peek_error("trailing characters")
    return value
