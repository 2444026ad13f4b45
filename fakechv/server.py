"""fakechv's HTTP server: micro_http's behaviour on a Unix socket.

Cloud Hypervisor serves its API with micro_http (Cargo.lock pins micro-http
5c2254d for v52/v53 and 7975fe0 at HEAD), a small HTTP/1.1 server of its own
whose behaviour a client sees directly: the exact bytes of its answers, how it
reads a request, what it does with a connection after a bad one. This module
emulates that behaviour on asyncio (stdlib only), so what a client sees of
fakechv is what it would see of CHV:

* Responses: ``HTTP/1.1 <code> `` (an empty reason phrase), ``Server``, then
  ``Connection: keep-alive``, then ``Content-Type`` and ``Content-Length`` only
  when the response has a body (an empty body still gets ``Content-Length:
  0``); no ``Date``. HTTP/1.0 requests get HTTP/1.1 answers.
* Reading (micro_http ``HttpConnection``): a 1024-byte buffer. Every read takes
  at most what fits in it; the request line and each header line, with their
  CRLF, must fit in it. Only ``Content-Length`` bodies (chunked bodies are read
  as the next request); no ``Host`` header needed; unknown headers ignored;
  ``Expect: 100-continue`` answered with ``100`` once the headers are in.
* A request micro_http cannot parse gets its own 400 (``Server: Firecracker
  API``, body ``{ "error": "...\\nAll previous unanswered requests will be
  dropped." }``); the requests parsed in the same read are dropped, the
  connection stays open and the parser keeps its state, as micro_http's does.
* At most 10 connections (``MAX_CONNECTIONS``): another one gets micro_http's
  503 ``Too many open connections`` and is closed.
* One request is handled at a time (CHV's HTTP thread is synchronous); nothing
  is read from a connection while one of its requests is handled.

File descriptors (SCM_RIGHTS) are read with ``recvmsg`` together with the bytes;
all that arrived on a connection since its previous request are attached to the
next request parsed in full, which hands them to the handler (it owns and closes
them). Descriptors that never reach a handler are closed with the connection.
A connection's socket is closed exactly once, when the client closes it (EOF or
error) or when the server stops, so no descriptor outlives its connection.

The request reader is :mod:`fakechv.http_request`; the API socket's binding and
lock (``--api-socket path=P``) are :mod:`fakechv.unix_sockets`.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import struct
from typing import Any, Protocol

from .http_request import (
    MICRO_HTTP_MAX_PAYLOAD,
    MICRO_HTTP_METHODS,
    HttpParseError,
    HttpRules,
    ParsedRequest,
    RequestReader,
    close_fds,
)
from .unix_sockets import bind_unix, listen_on_fd, take_socket_lock, unlink_if_ours
from .wire import SERVER_HEADER, ApiRequest, ApiResponse, Handler

__all__ = [
    "MAX_BODY_SIZE",
    "MAX_CONNECTIONS",
    "RunningServer",
    "ShutdownAware",
    "bad_request_response",
    "body_limit_for_profile",
    "micro_http_error",
    "render_response",
    "serve_forever",
    "server_options",
    "start_server",
]

log = logging.getLogger("fakechv.server")

#: Largest request body accepted by default (CHV v51-v53).
MAX_BODY_SIZE = MICRO_HTTP_MAX_PAYLOAD
#: The ``Server`` header of responses micro_http makes on its own (parse errors).
MICRO_HTTP_SERVER = "Firecracker API"
#: Descriptors micro_http takes per read (``SCM_MAX_FD``).
SCM_MAX_FD = 253
#: Connections micro_http serves at once (``MAX_CONNECTIONS``).
MAX_CONNECTIONS = 10
#: how long a stopping server waits for the answers it owes (vmm.shutdown's own)
DRAIN_TIMEOUT = 0.05
#: What micro_http writes to a connection over the limit before dropping it.
SERVER_FULL = (
    b"HTTP/1.1 503\r\nServer: Firecracker API\r\nConnection: close\r\n"
    b'Content-Length: 40\r\n\r\n{ "error": "Too many open connections" }'
)
_FD_SIZE = array.array("i").itemsize
_ANCILLARY = socket.CMSG_SPACE(SCM_MAX_FD * _FD_SIZE)


class ShutdownAware(Protocol):
    """A handler that can ask the server to stop (``vmm.shutdown``)."""

    shutdown_requested: asyncio.Event


def body_limit_for_profile(profile: str) -> int:
    """CHV's request body limit for a fakechv profile name."""
    from fakechv.profiles import get_profile

    return get_profile(profile).http_max_payload


def server_options(profile: str) -> dict[str, Any]:
    """The :func:`start_server` options that follow a fakechv profile's release."""
    from fakechv.profiles import get_profile

    p = get_profile(profile)
    return {
        "max_body_size": p.http_max_payload,
        "methods": p.http_methods,
        "socket_lock": p.api_socket_lock,
    }


def _json_headers() -> dict[str, str]:
    return {"Server": SERVER_HEADER, "Content-Type": "application/json"}


def bad_request_response(*messages: str) -> ApiResponse:
    """A 400 with CHV's error body (``["Bad Request"]`` by default)."""
    body = json.dumps(list(messages or ("Bad Request",))).encode()
    return ApiResponse(400, body, _json_headers())


def micro_http_error(message: str) -> ApiResponse:
    """The 400 that micro_http sends by itself when it cannot parse a request: not
    CHV's error array but ``{ "error": "..." }`` with the message inserted as is
    (a raw newline inside the string), and micro_http's own ``Server`` header."""
    body = (
        '{ "error": "' + message + '\nAll previous unanswered requests will be dropped." }'
    ).encode()
    return ApiResponse(400, body, {"Server": MICRO_HTTP_SERVER, "Content-Type": "application/json"})


def render_response(response: ApiResponse) -> bytes:
    """The bytes micro_http writes for ``response``. Every answer but a 204 carries
    ``Content-Type`` and ``Content-Length`` (``0`` without a body): micro_http's
    ``Response::new`` sets a length for every status except 100 and 204."""
    server = response.headers.get("Server", SERVER_HEADER)
    head = [f"HTTP/1.1 {response.status} ", f"Server: {server}", "Connection: keep-alive"]
    body = response.body
    if response.status != 204 or body:
        content_type = response.headers.get("Content-Type", "application/json")
        head.append(f"Content-Type: {content_type}")
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


# --------------------------------------------------------------------------- connections
class _Connection:
    """One client connection: reads with recvmsg, answers in order."""

    def __init__(self, server: RunningServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = RequestReader(server.rules)
        self.queue: collections.deque[ParsedRequest] = collections.deque()
        self.out = bytearray()
        self.closed = False
        self._reading = False
        self._writing = False
        self.worker: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._resume_reading()

    # reading ---------------------------------------------------------------
    def _resume_reading(self) -> None:
        if not self._reading and not self.closed:
            self._loop.add_reader(self.fd, self._on_readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data, ancdata, msg_flags, _addr = self.sock.recvmsg(
                self.reader.want(), _ANCILLARY, socket.MSG_CMSG_CLOEXEC
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("connection read failed: %s", exc)
            self.close()
            return
        fds = _received_fds(ancdata)
        if msg_flags & socket.MSG_CTRUNC:
            log.warning("file descriptors were truncated (more than %d)", SCM_MAX_FD)
        if not data:
            close_fds(fds)
            self.close()  # the client is gone: unanswered requests are dropped
            return
        self.server.fds_received += len(fds)
        try:
            requests = self.reader.feed(data, fds)
        except HttpParseError as exc:
            log.warning("bad HTTP request: %s", exc)
            self._write_interim()
            self._send(render_response(micro_http_error(str(exc))))
            return
        self._write_interim()
        if requests:
            self.queue.extend(requests)
            self._pause_reading()
            if self.worker is None:
                self.worker = self._loop.create_task(self._work())

    def _write_interim(self) -> None:
        for interim in self.reader.interim:
            self._send(interim)
        self.reader.interim.clear()

    async def _work(self) -> None:
        try:
            while self.queue and not self.closed:
                request = self.queue.popleft()
                response = await self.server.answer(request)
                if not self.closed:
                    self._send(render_response(response))
        finally:
            self.worker = None
            if not self.closed:
                self._resume_reading()

    # writing ---------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        if self.closed:
            return
        self.out += data
        self._flush()

    def _flush(self) -> None:
        while self.out and not self.closed:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                if not self._writing:
                    self._loop.add_writer(self.fd, self._flush)
                    self._writing = True
                return
            except OSError as exc:
                log.debug("connection write failed: %s", exc)
                self.close()
                return
            del self.out[:sent]
        if self._writing:
            self._loop.remove_writer(self.fd)
            self._writing = False

    # closing ---------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._pause_reading()
        if self._writing:
            self._loop.remove_writer(self.fd)
            self._writing = False
        for request in self.queue:
            close_fds(request.fds)
        self.queue.clear()
        self.reader.close()
        self.sock.close()
        self.server._forget(self)


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(cdata) - (len(cdata) % _FD_SIZE)
            fds.extend(struct.unpack(f"{usable // _FD_SIZE}i", cdata[:usable]))
    return fds


class RunningServer:
    """A listening fakechv API server; ``await close()`` stops it."""

    def __init__(
        self,
        handler: Handler,
        listener: socket.socket,
        path: str | None,
        owned: tuple[int, int] | None,
        rules: HttpRules,
        lock_fd: int | None = None,
    ) -> None:
        self.handler = handler
        self.rules = rules
        self.path = path
        #: (st_dev, st_ino) of the socket file this server bound, if it bound one
        self.owned = owned
        self.requests_count = 0
        self.fds_received = 0
        self._listener = listener
        self._lock_fd = lock_fd
        self._connections: dict[int, _Connection] = {}
        self._closed = False
        self._serial = asyncio.Lock()

    @property
    def max_body_size(self) -> int:
        return self.rules.max_payload

    @property
    def created_path(self) -> bool:
        return self.owned is not None

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _start(self) -> None:
        asyncio.get_running_loop().add_reader(self._listener.fileno(), self._on_accept)

    def _on_accept(self) -> None:
        for _ in range(16):  # drain a burst of clients; each is served on its own
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: the client waits in the backlog
                log.warning("accept failed: %s", exc)
                return
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        log.debug("connection %d accepted (%d open)", sock.fileno(), len(self._connections))
        if len(self._connections) >= MAX_CONNECTIONS:
            with contextlib.suppress(OSError):
                sock.setblocking(False)
                sock.send(SERVER_FULL)
            sock.close()
            return
        sock.setblocking(False)
        conn = _Connection(self, sock)
        self._connections[conn.fd] = conn

    def _forget(self, conn: _Connection) -> None:
        if self._connections.get(conn.fd) is conn:
            del self._connections[conn.fd]

    async def answer(self, request: ParsedRequest) -> ApiResponse:
        """The handler's answer to one request (handlers run one at a time)."""
        async with self._serial:
            self.requests_count += 1
            api_request = ApiRequest(request.method, request.path, request.body, tuple(request.fds))
            request.fds = []  # the handler owns them now
            try:
                response = await self.handler.handle(api_request)
            except Exception:
                log.exception("handler failed on %s %s", request.method, request.path)
                body = json.dumps(["Error from API", "Internal error"]).encode()
                response = ApiResponse(500, body, _json_headers())
            log.debug("%s %s -> %d", request.method, api_request.path, response.status)
            return response

    def _busy(self) -> bool:
        return any(c.worker is not None or c.out for c in self._connections.values())

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every request taken in has been
        answered and every answer written to its socket."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.0
        while self._busy() and loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(0.005, delay * 2 or 0.0005)

    async def close(self) -> None:
        """Stop accepting, close every connection, remove the socket file we bound."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
        self._listener.close()
        workers = []
        for conn in list(self._connections.values()):
            if conn.worker is not None:
                workers.append(conn.worker)
            conn.close()
        self._connections.clear()
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
        if self.path is not None and self.owned is not None:
            unlink_if_ours(self.path, self.owned)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None


async def start_server(
    handler: Handler,
    *,
    path: str | None = None,
    fd: int | None = None,
    max_body_size: int = MAX_BODY_SIZE,
    methods: frozenset[str] = MICRO_HTTP_METHODS,
    socket_lock: bool = True,
) -> RunningServer:
    """Serve ``handler`` on a new Unix socket at ``path`` (mode 0600) or on the
    inherited bound socket ``fd``. Bodies over ``max_body_size`` bytes and methods
    not in ``methods`` get micro_http's 400. With ``socket_lock`` (CHV v53 and
    later) ``path`` is guarded by ``path.lock`` and a stale socket there is
    replaced; without it (v51, v52) an existing file at ``path`` makes binding fail.
    :class:`SocketInUse` when a live instance serves ``path``."""
    if (path is None) == (fd is None):
        raise ValueError("start_server needs exactly one of path= or fd=")
    rules = HttpRules(methods=methods, max_payload=max_body_size)
    lock_fd: int | None = None
    owned: tuple[int, int] | None = None
    if path is not None:
        if socket_lock:
            lock_fd = take_socket_lock(path)
        try:
            listener, owned = bind_unix(path, "API socket", replace_stale=socket_lock)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        bound_path: str | None = path
    else:
        assert fd is not None
        listener = listen_on_fd(fd)
        name = listener.getsockname()
        bound_path = name if isinstance(name, str) and name else None
    listener.setblocking(False)
    server = RunningServer(handler, listener, bound_path, owned, rules, lock_fd)
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
        await server.drain(DRAIN_TIMEOUT)
    finally:
        for task in waiters:
            task.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.close()
    return reason[0]
