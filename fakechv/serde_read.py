"""serde_json's reader of JSON text, below the types.

Positions (line and column of an index), whitespace and literals, the nesting limit,
numbers (``parse_integer`` .. ``f64_from_parts`` without ``float_roundtrip``),
strings (escapes, UTF-16 surrogate pairs, control characters, UTF-8 checked once the
string ends), skipping a value (``IgnoredAny``), the punctuation of maps and
sequences, and Content: a value read without a type (``deserialize_any``), kept for
``#[serde(flatten)]`` and ``serde_json::Value``.
"""

from __future__ import annotations

import math
from typing import Any

from fakechv.serde_errors import SerdeError

__all__ = [
    "DIGITS",
    "RECURSION_LIMIT",
    "U64_MAX",
    "CMap",
    "ContentFloat",
    "JsonReader",
    "content_to_plain",
]

RECURSION_LIMIT = 128
_WS = b" \n\t\r"
DIGITS = b"0123456789"
#: serde_json's POW10 table: 1e0 .. 1e308, each the correctly rounded double
_POW10 = [float(f"1e{i}") for i in range(309)]
U64_MAX = (1 << 64) - 1


# --------------------------------------------------------------------------- content
class CMap(list[tuple[Any, Any]]):
    """serde's ``Content::Map``: entries in order, duplicates kept."""


class ContentFloat(float):
    """A Content number that was read as a float (``1.0`` is not ``1``)."""


def content_to_plain(value: Any) -> Any:
    if isinstance(value, CMap):
        out: dict[Any, Any] = {}
        for k, v in value:  # serde_json::Value: a repeated key keeps its last value
            out[k] = content_to_plain(v)
        return out
    if isinstance(value, list):
        return [content_to_plain(v) for v in value]
    if isinstance(value, ContentFloat):
        return float(value)
    return value


# --------------------------------------------------------------------------- reader
class JsonReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = len(data)
        self.i = 0
        self.depth = RECURSION_LIMIT

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
            if nxt is not None and nxt in DIGITS:
                raise self.peek_error("invalid number")
            return self._after_int(positive, 0)
        if first not in DIGITS:
            raise self.error("invalid number")
        significand = first - 0x30
        while True:
            c = self.peek()
            if c is None or c not in DIGITS:
                return self._after_int(positive, significand)
            digit = c - 0x30
            if significand >= U64_MAX // 10 and (
                significand > U64_MAX // 10 or digit > U64_MAX % 10
            ):
                return self._long_integer(positive, significand)
            self.i += 1
            significand = significand * 10 + digit

    def _after_int(self, positive: bool, significand: int) -> int | float:
        c = self.peek()
        if c == 0x2E:  # '.'
            return ContentFloat(self._decimal(positive, significand, 0))
        if c in (0x65, 0x45):  # e E
            return ContentFloat(self._exponent(positive, significand, 0))
        if positive:
            return significand
        if significand == 0 or significand > 1 << 63:
            return ContentFloat(-float(significand))
        return -significand

    def _long_integer(self, positive: bool, significand: int) -> float:
        exponent = 0
        while True:
            c = self.peek()
            if c is not None and c in DIGITS:
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
            if c is None or c not in DIGITS:
                break
            digit = c - 0x30
            if significand >= U64_MAX // 10 and (
                significand > U64_MAX // 10 or digit > U64_MAX % 10
            ):
                while (c := self.peek()) is not None and c in DIGITS:
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
        if first not in DIGITS:
            raise self.error("invalid number")
        exp = first - 0x30
        while (c := self.peek()) is not None and c in DIGITS:
            self.i += 1
            digit = c - 0x30
            if exp > (2**31 - 1 - digit) // 10:
                if significand != 0 and positive_exp:
                    raise self.error("number out of range")
                while (c := self.peek()) is not None and c in DIGITS:
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
            elif peek in DIGITS:
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
            if c is not None and c in DIGITS:
                raise self.peek_error("invalid number")
        elif first is not None and first in DIGITS:
            while (c := self.peek()) is not None and c in DIGITS:
                self.i += 1
        else:
            raise self.error("invalid number")
        c = self.peek()
        if c == 0x2E:
            self.i += 1
            seen = False
            while (c := self.peek()) is not None and c in DIGITS:
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
            if first is None or first not in DIGITS:
                raise self.error("invalid number")
            while (c := self.peek()) is not None and c in DIGITS:
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
        if c == 0x2D or c in DIGITS:
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
