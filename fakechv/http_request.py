"""micro_http's request reader (``HttpConnection``): the bytes of a connection in,
complete requests out.

A 1024-byte buffer: every read takes at most what fits in it; the request line and
each header line, with their CRLF, must fit in it. Only ``Content-Length`` bodies
(chunked bodies are read as the next request); no ``Host`` header needed; unknown
headers ignored; ``Expect: 100-continue`` answered with ``100`` once the headers are
in. What micro_http cannot parse raises :class:`HttpParseError` with micro_http's
message, and the reader keeps its state and buffer position, as micro_http's does.
:class:`HttpRules` holds what differs between the micro_http builds of CHV releases
(the methods it parses, the largest body).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

__all__ = [
    "BUFFER_SIZE",
    "HEAD_MAX_PAYLOAD",
    "MICRO_HTTP_MAX_PAYLOAD",
    "MICRO_HTTP_METHODS",
    "HttpParseError",
    "HttpRules",
    "ParsedRequest",
    "RequestReader",
    "close_fds",
]

#: micro_http's default payload limit (``MAX_PAYLOAD_SIZE``), used by CHV up to v53.
MICRO_HTTP_MAX_PAYLOAD = 51200
#: CHV after v53 raises the limit to 4 MiB (``HTTP_PAYLOAD_MAX_SIZE``, commit 247fa0c1a).
HEAD_MAX_PAYLOAD = 4 << 20
#: Methods micro_http 5c2254d parses (v51-v53); 7975fe0 (HEAD) adds DELETE.
MICRO_HTTP_METHODS = frozenset({"GET", "PUT", "PATCH"})
#: micro_http's read buffer (``BUFFER_SIZE``): no line may be longer.
BUFFER_SIZE = 1024


@dataclass(frozen=True)
class HttpRules:
    """What differs between the micro_http builds of CHV releases."""

    methods: frozenset[str] = MICRO_HTTP_METHODS
    max_payload: int = MICRO_HTTP_MAX_PAYLOAD


def _interim_continue(version: str) -> bytes:
    return f"{version} 100 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n".encode()


def close_fds(fds: list[int] | tuple[int, ...]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# --------------------------------------------------------------------------- parsing
class HttpParseError(Exception):
    """A request micro_http cannot parse; ``str()`` is micro_http's message."""


def _header_error(reason: str) -> HttpParseError:
    return HttpParseError(f"Invalid header. Reason: {reason}")


def _utf8_error(exc: UnicodeDecodeError) -> str:
    """Rust's ``Utf8Error`` display."""
    if exc.reason == "unexpected end of data":
        return f"incomplete utf-8 byte sequence from index {exc.start}"
    return f"invalid utf-8 sequence of {exc.end - exc.start} bytes from index {exc.start}"


def _parse_u32(text: str) -> int | None:
    """Rust's ``str::parse::<u32>``."""
    digits = text[1:] if text.startswith("+") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    value = int(digits)
    return value if value < 1 << 32 else None


@dataclass
class ParsedRequest:
    """One complete request as micro_http hands it to CHV."""

    method: str
    uri: str
    version: str
    body: bytes
    fds: list[int] = field(default_factory=list)

    @property
    def path(self) -> str:
        """micro_http's ``Uri::get_abs_path``: the query string stays part of it."""
        uri = self.uri
        if uri.startswith("http://"):
            rest = uri[len("http://") :]
            slash = rest.find("/")
            return rest[slash:] if slash >= 0 else ""
        return uri if uri.startswith("/") else ""


class RequestReader:
    """micro_http's request reader (``HttpConnection``), fed one read at a time.

    :meth:`want` says how many bytes the next read may take; :meth:`feed` takes
    them and returns the requests completed (or raises :class:`HttpParseError`, after
    which the reader keeps its state and buffer position, as micro_http's does).
    Interim ``100 Continue`` answers are collected in :attr:`interim`.
    """

    _LINE, _HEADERS, _BODY, _READY = range(4)

    def __init__(self, rules: HttpRules) -> None:
        self.rules = rules
        self._buf = bytearray(BUFFER_SIZE)
        self._cursor = 0
        self._state = self._LINE
        self._pending: ParsedRequest | None = None
        self._content_length = 0
        self._expect = False
        self._body = bytearray()
        self._to_read = 0
        #: descriptors received since the last complete request
        self.fds: list[int] = []
        #: interim responses (100 Continue) to write before the next answers
        self.interim: list[bytes] = []

    def want(self) -> int:
        return BUFFER_SIZE - self._cursor

    def feed(self, data: bytes, fds: list[int]) -> list[ParsedRequest]:
        self.fds.extend(fds)
        done: list[ParsedRequest] = []
        try:
            return self._parse(data, done)
        except HttpParseError:
            for request in done:  # dropped with the error, as micro_http drops them
                close_fds(request.fds)
            raise

    def _parse(self, data: bytes, done: list[ParsedRequest]) -> list[ParsedRequest]:
        end = self._cursor + len(data)
        self._buf[self._cursor : end] = data
        start = 0
        while True:
            if self._state == self._LINE:
                line_end = self._buf.find(b"\r\n", start, end)
                if line_end < 0:
                    if end == BUFFER_SIZE and start == 0:
                        raise HttpParseError("Invalid request.")
                    self._shift(start, end)
                    return done
                line = bytes(self._buf[start:line_end])
                start = line_end + 2
                self._pending = self._request_line(line)
                self._content_length, self._expect = 0, False
                self._state = self._HEADERS
            elif self._state == self._HEADERS:
                line_end = self._buf.find(b"\r\n", start, end)
                if line_end < 0:
                    if start == 0 and end == BUFFER_SIZE:
                        text = bytes(self._buf).decode("utf-8", "replace")
                        raise _header_error(f"Invalid content length. Header: {text}")
                    self._shift(start, end)
                    return done
                if line_end == start:
                    start += 2
                    if self._content_length == 0:
                        self._state = self._READY
                    else:
                        if self._content_length > self.rules.max_payload:
                            raise HttpParseError(
                                f"Request payload with size {self._content_length} is larger "
                                f"than the limit of {self.rules.max_payload} allowed by server."
                            )
                        if self._expect:
                            assert self._pending is not None
                            self.interim.append(_interim_continue(self._pending.version))
                        self._to_read = self._content_length
                        self._body = bytearray()
                        self._state = self._BODY
                    continue
                self._header_line(bytes(self._buf[start:line_end]))
                start = line_end + 2
            elif self._state == self._BODY:
                available = end - start
                if self._to_read > available:
                    self._body += self._buf[start:end]
                    self._to_read -= available
                    self._cursor = 0
                    return done
                self._body += self._buf[start : start + self._to_read]
                start += self._to_read
                self._to_read = 0
                assert self._pending is not None
                self._pending.body = bytes(self._body)
                self._body = bytearray()
                self._state = self._READY
            else:
                assert self._pending is not None
                self._state = self._LINE
                self._to_read = 0
                self._pending.fds, self.fds = self.fds, []
                done.append(self._pending)
                self._pending = None

    def _shift(self, start: int, end: int) -> None:
        if start:
            self._buf[: end - start] = self._buf[start:end]
        self._cursor = end - start

    def _request_line(self, line: bytes) -> ParsedRequest:
        first = line.find(b" ")
        second = line.find(b" ", first + 1) if first >= 0 else -1
        if second < 0:
            raise HttpParseError("Invalid request.")
        method, uri, version = line[:first], line[first + 1 : second], line[second + 1 :]
        name = method.decode("latin-1")
        if name not in self.rules.methods:
            raise HttpParseError("Invalid HTTP Method: Unsupported HTTP method.")
        if not uri:
            raise HttpParseError("Invalid URI: Empty URI not allowed.")
        try:
            uri_text = uri.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpParseError("Invalid URI: Cannot parse URI as UTF-8.") from None
        if version not in (b"HTTP/1.0", b"HTTP/1.1"):
            raise HttpParseError("Invalid HTTP Version: Unsupported HTTP version.")
        return ParsedRequest(name, uri_text, version.decode(), b"")

    def _header_line(self, raw: bytes) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _header_error(
                f"Header contains invalid characters. Key: {_utf8_error(exc)}"
            ) from None
        name, sep, value = line.partition(":")
        if not sep:
            raise _header_error(f"Header is incorrectly formatted. Key: {name}")
        key = name.strip().lower()
        if key == "content-length":
            length = _parse_u32(value.strip())
            if length is None:
                raise _header_error(f"Invalid value. Key:{name}; Value:{value}")
            self._content_length = length
        elif key == "expect":
            if value.strip() == "100-continue":
                self._expect = True
        elif key == "accept-encoding":
            self._accept_encoding(value.strip())
        # Content-Type, Accept, Transfer-Encoding, Server and any other header are
        # read and ignored (an unsupported value of a known header is not an error)

    @staticmethod
    def _accept_encoding(value: str) -> None:
        if not value:
            raise HttpParseError("Invalid request.")
        for item in value.split(","):
            token = item.strip()
            if token == "identity;q=0" or (token == "*;q=0" and "identity" not in value):
                raise _header_error(f"Invalid value. Key:Accept-Encoding; Value:{item}")

    def close(self) -> None:
        """Close every descriptor that never reached a handler."""
        close_fds(self.fds)
        self.fds = []
        if self._pending is not None:
            close_fds(self._pending.fds)
