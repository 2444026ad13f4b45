"""A raw HTTP/1.1 client of CHV's API socket: exact bytes out, exact bytes in.

The differential compares what a client sees of each side, so this client does not
interpret more than it must: it writes the request as given (with file descriptors as
``SCM_RIGHTS`` on its first bytes, as libvirt sends taps), and reads answers as
micro_http writes them: a status line, header lines in their order, a
``Content-Length`` body. :class:`HttpAnswer` keeps the status line and the headers as
received, in order, so that a reason phrase, a header's place and its value are
compared as they are.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

__all__ = [
    "HttpAnswer",
    "RawConnection",
    "WireError",
    "build_request",
]

#: the largest answer head (status line and headers) read before giving up
_MAX_HEAD = 64 * 1024
#: the largest body read
_MAX_BODY = 16 << 20


class WireError(Exception):
    """The connection failed (could not connect, reset while writing)."""


@dataclass(frozen=True)
class HttpAnswer:
    """One answer as it came: the status line, the headers in order, the body."""

    status_line: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def status(self) -> int:
        parts = self.status_line.split(" ", 2)
        try:
            return int(parts[1])
        except (IndexError, ValueError):
            return 0

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def to_json(self) -> dict[str, object]:
        return {
            "status_line": self.status_line,
            "headers": [list(h) for h in self.headers],
            "body": self.body.decode("utf-8", "backslashreplace"),
        }


def build_request(method: str, path: str, body: bytes | None) -> bytes:
    """The bytes of one request: what a plain client (curl, libvirt) sends."""
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Accept: */*"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


@dataclass
class RawConnection:
    """One client connection to a Unix socket, kept open across requests."""

    path: str
    sock: socket.socket | None = None
    _buffer: bytearray = field(default_factory=bytearray)

    async def connect(self, timeout: float = 5.0) -> None:
        """Connect (again, if the last connection was closed)."""
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, self.path), timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            raise WireError(f"cannot connect to {self.path}: {exc}") from None
        self.sock = sock
        self._buffer.clear()

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
        self._buffer.clear()

    async def send(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        """Write ``data``; ``fds`` ride on its first bytes."""
        if self.sock is None:
            await self.connect()
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        try:
            sent = 0
            if fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
                while True:
                    try:
                        sent = self.sock.sendmsg([data], anc)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0.001)
            await loop.sock_sendall(self.sock, data[sent:])
        except OSError as exc:
            raise WireError(f"write to {self.path} failed: {exc}") from None

    async def _fill(self, deadline: float) -> bool:
        """Read more bytes before ``deadline`` (loop time); False at EOF or timeout."""
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        left = deadline - loop.time()
        if left <= 0:
            return False
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), left)
        except TimeoutError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return False
        self._buffer += chunk
        return True

    @property
    def is_open(self) -> bool:
        return self.sock is not None

    async def read_answer(self, timeout: float) -> HttpAnswer | None:
        """The next answer, or None when the server closed the connection or said
        nothing within ``timeout`` seconds (then :attr:`is_open` tells which)."""
        if self.sock is None and not self._buffer:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > _MAX_HEAD or self.sock is None:
                return None
            if not await self._fill(deadline):
                return None
        head, _, _rest = bytes(self._buffer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        answer = HttpAnswer(lines[0], tuple(headers), b"")
        length = 0
        raw_length = answer.header("Content-Length")
        if raw_length is not None and raw_length.isdigit():
            length = min(int(raw_length), _MAX_BODY)
        start = len(head) + 4
        while len(self._buffer) < start + length:
            if self.sock is None or not await self._fill(deadline):
                break
        body = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        return HttpAnswer(answer.status_line, answer.headers, body)

    async def read_answers(self, idle: float, timeout: float) -> list[HttpAnswer]:
        """Every answer until the server is quiet for ``idle`` seconds (for requests
        that may get several answers or none, e.g. bytes micro_http cannot parse)."""
        out: list[HttpAnswer] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            answer = await self.read_answer(min(idle, max(0.0, end - loop.time())))
            if answer is None:
                break
            out.append(answer)
        return out
