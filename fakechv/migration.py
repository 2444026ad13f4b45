"""Migration transport between two fakechv processes.

``vm.receive-migration`` on the destination calls :func:`receive_state`, which
listens on the receiver URL and waits for one sender; ``vm.send-migration`` on
the source calls :func:`send_state`. URLs are CHV's ``unix:/path`` and
``tcp:HOST:PORT``; only loopback hosts are allowed (fakechv never listens on a
network address).

Wire format (fakechv's own, not CHV's): the sender writes ``MAGIC``, an 8-byte
big-endian length and that many bytes of UTF-8 JSON (the state, an object); the
receiver answers with ``MAGIC``, a length and a JSON object ``{"ok": true}`` or
``{"ok": false, "error": "..."}``. The sender reports success only after a
positive answer, so a transfer that is cut, refused or times out leaves the
source untouched; every such failure is a :class:`MigrationError` on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakechv.errors import io_error_text
from fakechv.unix_sockets import bind_unix

__all__ = [
    "ACCEPT_TIMEOUT",
    "IO_TIMEOUT",
    "MAGIC",
    "MAX_STATE_SIZE",
    "MigrationError",
    "MigrationUrl",
    "parse_url",
    "receive_state",
    "send_state",
]

log = logging.getLogger("fakechv.migration")

MAGIC = b"FAKECHV-MIGRATION-1\n"
#: How long a receiver waits for a sender to connect, in seconds.
ACCEPT_TIMEOUT = 60.0
#: How long one read/write/connect may take, in seconds.
IO_TIMEOUT = 10.0
#: Largest state accepted (a device tree is a few kilobytes).
MAX_STATE_SIZE = 64 * 1024 * 1024

_LEN = struct.Struct(">Q")


class MigrationError(Exception):
    """A migration that did not complete (the message says why and where)."""


@dataclass(frozen=True)
class MigrationUrl:
    """A parsed ``unix:/path`` (``path`` set) or ``tcp:host:port`` URL."""

    url: str
    path: str | None = None
    host: str | None = None
    port: int | None = None


def parse_url(url: str) -> MigrationUrl:
    """Parse a migration URL; raises :class:`MigrationError` naming the URL."""
    if not isinstance(url, str):
        raise MigrationError(f"invalid migration URL {url!r}: not a string")
    scheme, sep, rest = url.partition(":")
    if not sep:
        raise MigrationError(
            f"invalid migration URL {url!r}: expected unix:<path> or tcp:<host>:<port>"
        )
    if scheme == "unix":
        if not rest:
            raise MigrationError(f"invalid migration URL {url!r}: empty socket path")
        return MigrationUrl(url, path=rest)
    if scheme == "tcp":
        host, sep, port_text = rest.rpartition(":")
        if not sep or not host or not port_text:
            raise MigrationError(f"invalid migration URL {url!r}: expected tcp:<host>:<port>")
        try:
            port = int(port_text)
        except ValueError:
            raise MigrationError(f"invalid migration URL {url!r}: port {port_text!r}") from None
        if not 0 < port < 65536:
            raise MigrationError(f"invalid migration URL {url!r}: port {port} out of range")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host != "localhost":
            try:
                addr = ipaddress.ip_address(host)
            except ValueError:
                raise MigrationError(
                    f"migration URL {url!r}: host {host!r} is not a loopback address "
                    "(fakechv only migrates over loopback)"
                ) from None
            if not addr.is_loopback:
                raise MigrationError(
                    f"migration URL {url!r}: refusing non-loopback host {host} "
                    "(fakechv only migrates over loopback)"
                )
        return MigrationUrl(url, host=host, port=port)
    raise MigrationError(f"invalid migration URL {url!r}: unsupported scheme {scheme!r}")


async def _read_frame(reader: asyncio.StreamReader, what: str, timeout: float) -> Any:
    try:
        async with asyncio.timeout(timeout):
            magic = await reader.readexactly(len(MAGIC))
            if magic != MAGIC:
                raise MigrationError(f"{what}: peer does not speak fakechv's migration protocol")
            (size,) = _LEN.unpack(await reader.readexactly(_LEN.size))
            if size > MAX_STATE_SIZE:
                raise MigrationError(f"{what}: frame of {size} bytes is too large")
            payload = await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise MigrationError(
            f"{what}: connection closed after {len(exc.partial)} of the expected bytes"
        ) from None
    except TimeoutError:
        raise MigrationError(f"{what}: timed out after {timeout:g} s") from None
    except OSError as exc:
        raise MigrationError(f"{what}: {exc.strerror or exc}") from None
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise MigrationError(f"{what}: invalid JSON: {exc}") from None


async def _write_frame(
    writer: asyncio.StreamWriter, obj: object, what: str, timeout: float
) -> None:
    payload = json.dumps(obj, separators=(",", ":")).encode()
    try:
        async with asyncio.timeout(timeout):
            writer.write(MAGIC + _LEN.pack(len(payload)) + payload)
            await writer.drain()
    except TimeoutError:
        raise MigrationError(f"{what}: timed out after {timeout:g} s") from None
    except OSError as exc:
        raise MigrationError(f"{what}: {exc.strerror or exc}") from None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def send_state(url: str, state: dict[str, Any], *, timeout: float | None = None) -> None:
    """Send ``state`` to a receiver listening on ``url``; returns only once the
    receiver has acknowledged it. Raises :class:`MigrationError` otherwise."""
    io_timeout = IO_TIMEOUT if timeout is None else timeout
    target = parse_url(url)
    if not isinstance(state, dict):
        raise MigrationError(f"migration to {url}: state must be an object")
    try:
        async with asyncio.timeout(io_timeout):
            if target.path is not None:
                reader, writer = await asyncio.open_unix_connection(target.path)
            else:
                reader, writer = await asyncio.open_connection(target.host, target.port)
    except TimeoutError:
        raise MigrationError(f"migration to {url}: connect timed out") from None
    except OSError as exc:
        # the context CHV gives the connect error (vmm/src/migration/transport.rs@v53.0
        # :1040, 1062), then the io::Error as Rust prints it
        over = "UNIX" if target.path is not None else "TCP"
        raise MigrationError(f"Error connecting to {over} socket: {io_error_text(exc)}") from None
    try:
        await _write_frame(writer, state, f"migration to {url}", io_timeout)
        answer = await _read_frame(
            reader, f"migration to {url}: waiting for the receiver", io_timeout
        )
    finally:
        await _close(writer)
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        reason = answer.get("error") if isinstance(answer, dict) else None
        raise MigrationError(
            f"migration to {url}: refused by the receiver: {reason or repr(answer)}"
        )
    log.info("migration state sent to %s", url)


def _listen(target: MigrationUrl) -> socket.socket:
    if target.path is not None:
        # CHV binds the path as it is (migration/transport.rs@v53.0:1105
        # ``UnixListener::bind``): any file already there makes the receive fail,
        # and the socket file stays after the transfer
        try:
            sock, _identity = bind_unix(
                target.path, f"receive migration on {target.url}:", replace_stale=False
            )
        except OSError as exc:
            raise MigrationError(
                f"receive migration on {target.url}: Error binding to UNIX socket: "
                f"{exc.strerror or exc}"
            ) from None
        sock.setblocking(False)
        return sock
    else:
        assert target.host is not None and target.port is not None
        family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
        host = "127.0.0.1" if target.host == "localhost" else target.host
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, target.port))
        except OSError as exc:
            sock.close()
            raise MigrationError(
                f"receive migration on {target.url}: {exc.strerror or exc}"
            ) from None
    sock.listen(1)
    sock.setblocking(False)
    return sock


async def receive_state(
    url: str,
    *,
    accept_timeout: float | None = None,
    timeout: float | None = None,
    validate: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Listen on ``url``, take the state from one sender, acknowledge it, and
    return it. ``validate`` (optional) may raise to refuse the state; the
    sender then fails with the refusal message. Raises :class:`MigrationError`
    when nothing valid arrives (timeout, cut transfer, bad data)."""
    target = parse_url(url)
    wait = ACCEPT_TIMEOUT if accept_timeout is None else accept_timeout
    io_timeout = IO_TIMEOUT if timeout is None else timeout
    listener = _listen(target)
    loop = asyncio.get_running_loop()
    conn: socket.socket | None = None
    try:
        log.info("waiting for migration on %s", url)
        try:
            async with asyncio.timeout(wait):
                conn, _ = await loop.sock_accept(listener)
        except TimeoutError:
            raise MigrationError(
                f"receive migration on {url}: no sender connected within {wait:g} s"
            ) from None
    finally:
        listener.close()
    reader, writer = await asyncio.open_connection(sock=conn)
    what = f"receive migration on {url}"
    try:
        state = await _read_frame(reader, what, io_timeout)
        if not isinstance(state, dict):
            await _write_frame(
                writer, {"ok": False, "error": "state is not an object"}, what, io_timeout
            )
            raise MigrationError(f"{what}: state is not an object")
        if validate is not None:
            try:
                validate(state)
            except Exception as exc:
                with contextlib.suppress(MigrationError):
                    await _write_frame(writer, {"ok": False, "error": str(exc)}, what, io_timeout)
                raise MigrationError(f"{what}: state refused: {exc}") from exc
        await _write_frame(writer, {"ok": True}, what, io_timeout)
    finally:
        await _close(writer)
    log.info("migration state received on %s", url)
    return state
