"""HTTP server of fakechv: CHV's API on a Unix socket, with SCM_RIGHTS.

Every HTTP request is turned into a :class:`fakechv.wire.ApiRequest` and handed
to a :class:`fakechv.wire.Handler`; its :class:`fakechv.wire.ApiResponse` is
written back as is.

Plain asyncio transports drop ancillary data, so connections are accepted here
and wrapped in :class:`_FdSocket`, a socket whose ``recv`` uses ``recvmsg`` and
keeps the file descriptors that arrive with the bytes. When a request has been
read completely, the descriptors received on its connection so far are attached
to it; from then on the handler owns them. Descriptors that never reach a
handler (malformed request, client gone, connection closed) are closed here.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import stat
from collections.abc import Iterator
from typing import Any, Protocol

from aiohttp import web, web_protocol, web_server
from aiohttp.web_request import BaseRequest

from .wire import SERVER_HEADER, ApiRequest, ApiResponse, Handler

__all__ = [
    "HEAD_MAX_PAYLOAD",
    "MAX_BODY_SIZE",
    "MAX_FDS_PER_MESSAGE",
    "MICRO_HTTP_MAX_PAYLOAD",
    "RunningServer",
    "ShutdownAware",
    "bad_request_response",
    "body_limit_for_profile",
    "micro_http_error",
    "serve_forever",
    "start_server",
]

log = logging.getLogger("fakechv.server")

#: micro_http's default payload limit (``MAX_PAYLOAD_SIZE``), used by CHV up to v53.
MICRO_HTTP_MAX_PAYLOAD = 51200
#: CHV after v53 raises the limit to 4 MiB (``HTTP_PAYLOAD_MAX_SIZE``, commit 247fa0c1a).
HEAD_MAX_PAYLOAD = 4 << 20
#: Largest request body accepted by default (CHV v51-v53).
MAX_BODY_SIZE = MICRO_HTTP_MAX_PAYLOAD
#: Methods micro_http parses; any other is a parse error answered by micro_http itself.
MICRO_HTTP_METHODS = frozenset({"GET", "PUT", "PATCH", "DELETE"})
#: The ``Server`` header of responses micro_http makes on its own (parse errors).
MICRO_HTTP_SERVER = "Firecracker API"
#: Descriptors read per recvmsg call (libvirt sends one per tap queue).
MAX_FDS_PER_MESSAGE = 64

_JSON_HEADERS = {"Content-Type": "application/json"}


class ShutdownAware(Protocol):
    """A handler that can ask the server to stop (``vmm.shutdown``)."""

    shutdown_requested: asyncio.Event


def _error_body(*messages: str) -> bytes:
    return json.dumps(list(messages)).encode()


def bad_request_response(*messages: str) -> ApiResponse:
    """A 400 with CHV's error body (``["Bad Request"]`` by default)."""
    return ApiResponse(400, _error_body(*(messages or ("Bad Request",))), dict(_JSON_HEADERS))


def micro_http_error(message: str) -> ApiResponse:
    """The 400 that micro_http (CHV's HTTP library) sends by itself when it cannot
    parse a request: not CHV's error array but ``{ "error": "..." }`` with a raw
    newline inside the string, and micro_http's own ``Server`` header."""
    body = (
        '{ "error": "' + message + '\nAll previous unanswered requests will be dropped." }'
    ).encode()
    return ApiResponse(400, body, {"Server": MICRO_HTTP_SERVER, "Content-Type": "application/json"})


def body_limit_for_profile(profile: str) -> int:
    """CHV's request body limit for a fakechv profile name."""
    return HEAD_MAX_PAYLOAD if profile == "head" else MICRO_HTTP_MAX_PAYLOAD


def _size_error(size: int, limit: int) -> ApiResponse:
    return micro_http_error(
        f"Request payload with size {size} is larger than the limit of {limit} allowed by server."
    )


def _close_fds(fds: list[int] | tuple[int, ...]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class _FdSocket(socket.socket):
    """An accepted connection whose reads collect SCM_RIGHTS descriptors."""

    def __init__(self, family: int, type: int, proto: int, fileno: int) -> None:
        super().__init__(family, type, proto, fileno)
        self.pending_fds: list[int] = []

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        anc_size = socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * array.array("i").itemsize)
        data, ancdata, msg_flags, _addr = self.recvmsg(
            bufsize, anc_size, flags | socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                usable = len(cdata) - (len(cdata) % fds.itemsize)
                fds.frombytes(cdata[:usable])
                self.pending_fds.extend(fds)
        if msg_flags & socket.MSG_CTRUNC:
            log.warning("file descriptors were truncated (more than %d)", MAX_FDS_PER_MESSAGE)
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        size = nbytes or len(view)
        data = self.recv(size, flags)
        view[: len(data)] = data
        return len(data)

    def take_fds(self) -> tuple[int, ...]:
        fds = tuple(self.pending_fds)
        self.pending_fds.clear()
        return fds

    def close(self) -> None:
        _close_fds(self.pending_fds)
        self.pending_fds.clear()
        super().close()


def _to_web_response(response: ApiResponse) -> web.Response:
    headers = dict(response.headers)
    headers.setdefault("Server", SERVER_HEADER)
    if response.status == 204 or not response.body:
        headers.pop("Content-Type", None)
        return web.Response(status=response.status, headers=headers)
    return web.Response(status=response.status, body=response.body, headers=headers)


class _ChvRequestHandler(web_protocol.RequestHandler):
    """aiohttp's protocol with CHV-shaped answers to malformed requests."""

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """The client closed its sending side. A request whose body was cut
        short is dropped with the connection (its fds are closed); otherwise
        what was received is answered before the connection closes."""
        current = getattr(self, "_current_request", None)
        if current is not None and not current.content.is_eof():
            return None  # the transport closes; connection_lost cancels the request
        self.close()
        return True

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.warning("bad HTTP request: %s", message or exc or status)
        text = str(message or exc or "")
        if "method" in text.lower():
            resp = micro_http_error("Invalid HTTP Method: Unsupported HTTP method.")
        else:
            resp = micro_http_error("Invalid request.")
        out = _to_web_response(resp)
        out.force_close()
        return out


class _ChvServer(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _ChvRequestHandler(self, loop=self._loop, **self._kwargs)


class RunningServer:
    """A listening fakechv API server; ``await close()`` stops it."""

    def __init__(
        self,
        handler: Handler,
        listener: socket.socket,
        path: str | None,
        created_path: bool,
        max_body_size: int = MAX_BODY_SIZE,
    ) -> None:
        self.handler = handler
        self.max_body_size = max_body_size
        self.path = path
        self.created_path = created_path
        self.requests_count = 0
        self.fds_received = 0
        self._listener = listener
        self._socks: dict[Any, _FdSocket] = {}
        self._closed = False
        self._aio = _ChvServer(self._dispatch, access_log=None)
        self._accept_task: asyncio.Task[None] | None = None

    @property
    def open_connections(self) -> int:
        return len(self._socks)

    def _start(self) -> None:
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                conn, _addr = await loop.sock_accept(self._listener)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                if self._closed:
                    return
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.05)
                continue
            sock = _FdSocket(conn.family, conn.type, conn.proto, conn.detach())
            sock.setblocking(False)
            proto = self._aio()
            self._socks[proto] = sock
            try:
                await loop.connect_accepted_socket(lambda p=proto: p, sock)  # type: ignore[misc]
            except OSError as exc:
                log.warning("connection setup failed: %s", exc)
                self._socks.pop(proto, None)
                sock.close()

    def _sock_for(self, request: BaseRequest) -> _FdSocket | None:
        sock = self._socks.get(request.protocol)
        if sock is not None and sock.fileno() < 0:
            self._socks.pop(request.protocol, None)
            return None
        return sock

    def _forget_closed(self) -> None:
        for proto, sock in list(self._socks.items()):
            if sock.fileno() < 0:
                del self._socks[proto]

    async def _read_body(self, request: BaseRequest) -> bytes | int:
        """The body, or its (announced or so far read) size when it is larger
        than the limit (checked on Content-Length before reading, like micro_http)."""
        length = request.content_length
        if length is not None and length > self.max_body_size:
            return length
        if request.headers.get("Expect", "").lower() == "100-continue" and length:
            transport = request.transport
            if transport is not None:  # micro_http answers Expect the same way
                transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > self.max_body_size:
                return size
            chunks.append(chunk)
        return b"".join(chunks)

    async def _dispatch(self, request: BaseRequest) -> web.StreamResponse:
        self._forget_closed()
        sock = self._sock_for(request)
        if request.method not in MICRO_HTTP_METHODS:
            if sock is not None:
                _close_fds(sock.take_fds())
            log.warning("%s %s: method not parsed by micro_http", request.method, request.path)
            out = _to_web_response(
                micro_http_error("Invalid HTTP Method: Unsupported HTTP method.")
            )
            out.force_close()
            return out
        try:
            body = await self._read_body(request)
        except Exception as exc:  # client gone mid-body, broken chunking
            if sock is not None:
                _close_fds(sock.take_fds())
            log.warning("%s %s: request body not read: %s", request.method, request.path, exc)
            out = _to_web_response(bad_request_response())
            out.force_close()
            return out
        fds = sock.take_fds() if sock is not None else ()
        self.fds_received += len(fds)
        if isinstance(body, int):
            _close_fds(fds)
            log.warning(
                "%s %s: body of %d bytes over the %d byte limit",
                request.method,
                request.path,
                body,
                self.max_body_size,
            )
            # keep the connection: aiohttp drains the rest of the body, so a
            # client still sending is not cut off before it reads the answer
            return _to_web_response(_size_error(body, self.max_body_size))
        self.requests_count += 1
        api_request = ApiRequest(request.method, request.raw_path.split("?", 1)[0], body, fds)
        try:
            response = await self.handler.handle(api_request)
        except Exception:
            log.exception("handler failed on %s %s", request.method, request.path)
            response = ApiResponse(
                500, _error_body("Error from API", "Internal error"), dict(_JSON_HEADERS)
            )
        log.debug("%s %s -> %d", request.method, api_request.path, response.status)
        return _to_web_response(response)

    async def close(self) -> None:
        """Stop accepting, close connections, and remove the socket file we created."""
        if self._closed:
            return
        self._closed = True
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
        self._listener.close()
        with contextlib.suppress(Exception):
            await self._aio.shutdown(1.0)
        for sock in list(self._socks.values()):
            sock.close()
        self._socks.clear()
        if self.created_path and self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def umask(mask: int) -> contextlib.AbstractContextManager[None]:
    """Create files (sockets) under ``mask`` (0o177: mode 0600)."""
    return _umask(mask)


def unlink_stale_socket(path: str, what: str) -> None:
    """Remove a socket file left behind at ``path``; OSError if something else is there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{what} {path} exists and is not a socket")
    os.unlink(path)


def _listen_on_path(path: str) -> socket.socket:
    unlink_stale_socket(path, "API socket path")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _umask(0o177):
            sock.bind(path)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"API socket {path}: {exc.strerror or exc}") from None
    return sock


def _listen_on_fd(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise OSError(f"API socket fd {fd} is not usable: {exc.strerror or exc}") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise OSError(f"API socket fd {fd} is not a Unix stream socket")
    try:
        sock.listen(128)  # no-op when already listening; required when only bound
    except OSError as exc:
        sock.detach()
        raise OSError(f"API socket fd {fd} cannot listen: {exc.strerror or exc}") from None
    return sock


async def start_server(
    handler: Handler,
    *,
    path: str | None = None,
    fd: int | None = None,
    max_body_size: int = MAX_BODY_SIZE,
) -> RunningServer:
    """Serve ``handler`` on a new Unix socket at ``path`` (mode 0600; a stale
    socket file is replaced) or on the inherited bound socket ``fd``. Bodies
    over ``max_body_size`` bytes get micro_http's 400 (see
    :func:`body_limit_for_profile`)."""
    if (path is None) == (fd is None):
        raise ValueError("start_server needs exactly one of path= or fd=")
    if path is not None:
        listener = _listen_on_path(path)
        created = True
        bound_path: str | None = path
    else:
        assert fd is not None
        listener = _listen_on_fd(fd)
        created = False
        name = listener.getsockname()
        bound_path = name if isinstance(name, str) and name else None
    listener.setblocking(False)
    server = RunningServer(handler, listener, bound_path, created, max_body_size)
    server._start()
    log.info("API server listening on %s", bound_path or f"fd {fd}")
    return server


async def serve_forever(server: RunningServer, *, handle_signals: bool = True) -> str:
    """Run until the handler's ``shutdown_requested`` is set or SIGTERM/SIGINT
    arrives; then close the server. Returns why it stopped (``"shutdown"`` or
    the signal name)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason = ["shutdown"]

    def on_signal(sig: signal.Signals) -> None:
        reason[0] = sig.name
        stop.set()

    installed: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
    waiters: list[asyncio.Task[Any]] = [loop.create_task(stop.wait())]
    shutdown_event = getattr(server.handler, "shutdown_requested", None)
    if isinstance(shutdown_event, asyncio.Event):
        waiters.append(loop.create_task(shutdown_event.wait()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        # let the response to vmm.shutdown reach the client before closing
        await asyncio.sleep(0.05)
    finally:
        for task in waiters:
            task.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.close()
    return reason[0]
