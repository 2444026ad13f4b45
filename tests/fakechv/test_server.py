"""fakechv.server over a real Unix socket, with a recording stand-in handler."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from typing import Any

import pytest
from conftest import unix_http

from fakechv.server import body_limit_for_profile, start_server
from fakechv.wire import SERVER_HEADER, ApiRequest, ApiResponse


class RecordingHandler:
    """Answers like CHV's router for a few paths; records requests and the fds'
    identities, then closes the fds as a real handler must."""

    def __init__(self) -> None:
        self.requests: list[ApiRequest] = []
        self.fd_inodes: list[list[tuple[int, int]]] = []
        self.shutdown_requested = asyncio.Event()
        self.fail = False

    async def handle(self, request: ApiRequest) -> ApiResponse:
        self.requests.append(request)
        inodes = []
        for fd in request.fds:
            st = os.fstat(fd)
            inodes.append((st.st_dev, st.st_ino))
        self.fd_inodes.append(inodes)
        for fd in request.fds:
            os.close(fd)
        if self.fail:
            raise RuntimeError("handler bug")
        hdr = {"Content-Type": "application/json"}
        if request.path == "/api/v1/vmm.ping" and request.method == "GET":
            return ApiResponse(200, b'{"version":"53.0.0"}', hdr)
        if request.path == "/api/v1/vm.add-net" and request.method == "PUT":
            return ApiResponse(204)
        if request.path == "/api/v1/vmm.shutdown":
            self.shutdown_requested.set()
            return ApiResponse(200)
        return ApiResponse(404, b'["Not Found"]', hdr)


def _pipe_fds() -> tuple[int, int]:
    r, w = os.pipe()
    return r, w


def _inode(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def test_request_reaches_handler_and_response_comes_back(fakechv_server: Any) -> None:
    handler = RecordingHandler()
    srv = fakechv_server(handler=handler)
    res = unix_http(srv.path, "GET", "/api/v1/vmm.ping")
    assert res.status == 200
    assert res.json == {"version": "53.0.0"}
    assert res.headers["Server"] == SERVER_HEADER
    assert res.headers["Content-Type"] == "application/json"
    req = handler.requests[-1]
    assert (req.method, req.path, req.body, req.fds) == ("GET", "/api/v1/vmm.ping", b"", ())
    res = unix_http(srv.path, "PUT", "/api/v1/vm.add-net", b'{"tap":"t0"}')
    assert res.status == 204 and res.body == b""
    assert "Content-Type" not in res.headers
    assert handler.requests[-1].body == b'{"tap":"t0"}'


def test_socket_mode_is_0600_and_stale_socket_replaced(tmp_path: Any) -> None:
    path = str(tmp_path / "api.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # leaves a socket file nobody listens on

    async def scenario() -> int:
        server = await start_server(RecordingHandler(), path=path)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        await server.close()
        assert not os.path.exists(path)
        return mode

    assert asyncio.run(scenario()) == 0o600


def test_path_that_is_not_a_socket_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "file"
    path.write_text("data")

    async def scenario() -> None:
        await start_server(RecordingHandler(), path=str(path))

    with pytest.raises(OSError, match="not a socket"):
        asyncio.run(scenario())
    assert path.read_text() == "data"


def test_listen_on_inherited_fd(tmp_path: Any) -> None:
    path = str(tmp_path / "inh.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    fd = listener.detach()

    async def scenario() -> int:
        server = await start_server(RecordingHandler(), fd=fd)
        assert server.path == path
        res = await asyncio.to_thread(unix_http, path, "GET", "/api/v1/vmm.ping")
        await server.close()
        assert os.path.exists(path)  # not ours: left in place
        return res.status

    assert asyncio.run(scenario()) == 200
    os.unlink(path)


def test_scm_rights_fds_reach_handler(fakechv_server: Any) -> None:
    handler = RecordingHandler()
    srv = fakechv_server(handler=handler)
    r1, w1 = _pipe_fds()
    r2, w2 = _pipe_fds()
    try:
        sent = [_inode(r1), _inode(w2)]
        res = unix_http(srv.path, "PUT", "/api/v1/vm.add-net", b'{"id":"n0"}', fds=[r1, w2])
        assert res.status == 204
        assert handler.fd_inodes[-1] == sent
        assert srv.server.fds_received == 2
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def test_fds_closed_after_handler_error(fakechv_server: Any) -> None:
    handler = RecordingHandler()
    handler.fail = True
    srv = fakechv_server(handler=handler)
    r, w = _pipe_fds()
    inode = _inode(r)[1]
    try:
        res = unix_http(srv.path, "PUT", "/api/v1/vm.add-net", b"{}", fds=[r])
    finally:
        os.close(r)
        os.close(w)
    assert res.status == 500
    assert res.json[0] == "Error from API"
    assert len(handler.fd_inodes[-1]) == 1
    # the server runs in this process: no copy of the pipe is left open
    assert _wait_released(inode)


def _holders(pid: int | str, inode: int) -> list[int]:
    """Descriptors of process ``pid`` that refer to the pipe ``inode``."""
    out = []
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target == f"pipe:[{inode}]":
            out.append(int(name))
    return out


def _wait_released(inode: int, pid: int | str = "self") -> bool:
    """True once no descriptor of ``pid`` refers to the pipe ``inode``."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _holders(pid, inode):
            return True
        time.sleep(0.01)
    return False


def test_fds_closed_when_request_never_dispatched(fakechv_server: Any) -> None:
    handler = RecordingHandler()
    srv = fakechv_server(handler=handler)
    r, w = _pipe_fds()
    inode = _inode(r)[1]
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect(srv.path)
        head = b"PUT /api/v1/vm.add-net HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        import array

        fdarr = array.array("i", [r]).tobytes()
        sock.sendmsg([head], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fdarr)])
        time.sleep(0.1)
    finally:
        sock.close()  # abrupt disconnect mid-body
        os.close(r)
        os.close(w)
    assert _wait_released(inode)
    assert handler.requests == []
    assert unix_http(srv.path, "GET", "/api/v1/vmm.ping").status == 200


def _raw_exchange(path: str, data: bytes) -> bytes:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    try:
        sock.connect(path)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        sock.close()


def test_malformed_request_line_gets_chv_error(fakechv_server: Any) -> None:
    handler = RecordingHandler()
    srv = fakechv_server(handler=handler)
    out = _raw_exchange(srv.path, b"THIS IS NOT HTTP\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400"
    assert b"Traceback" not in out
    assert b"\r\nServer: Firecracker API\r\n" in head  # micro_http answers by itself
    assert body.startswith(b'{ "error": "Invalid HTTP Method')
    assert body.endswith(b'\nAll previous unanswered requests will be dropped." }')
    assert handler.requests == []
    assert unix_http(srv.path, "GET", "/api/v1/vmm.ping").status == 200


@pytest.mark.parametrize("profile", ["v53", "head"])
def test_oversized_body_rejected_like_micro_http(fakechv_server: Any, profile: str) -> None:
    handler = RecordingHandler()
    srv = fakechv_server(profile, handler=handler)
    limit = body_limit_for_profile(profile)
    assert srv.server.max_body_size == limit
    at_limit = b"x" * limit
    assert unix_http(srv.path, "PUT", "/api/v1/vm.add-net", at_limit).status == 204
    assert handler.requests[-1].body == at_limit
    r, w = _pipe_fds()
    inode = _inode(r)[1]
    try:
        body = b"x" * (limit + 1)
        res = unix_http(srv.path, "PUT", "/api/v1/vm.add-net", body, fds=[r])
    finally:
        os.close(r)
        os.close(w)
    assert res.status == 400
    assert res.headers["Server"] == "Firecracker API"
    expected = (
        f"Request payload with size {limit + 1} is larger than the limit of {limit} "
        "allowed by server.\nAll previous unanswered requests will be dropped."
    )
    assert res.body == b'{ "error": "' + expected.encode() + b'" }'
    assert len(handler.requests) == 1
    assert _wait_released(inode)
    assert unix_http(srv.path, "GET", "/api/v1/vmm.ping").status == 200


def test_method_micro_http_does_not_parse(fakechv_server: Any) -> None:
    handler = RecordingHandler()
    srv = fakechv_server(handler=handler)
    res = unix_http(srv.path, "POST", "/api/v1/vmm.ping", b"{}")
    assert res.status == 400
    assert res.body.startswith(b'{ "error": "Invalid HTTP Method: Unsupported HTTP method.')
    assert handler.requests == []
    assert unix_http(srv.path, "GET", "/api/v1/vmm.ping").status == 200


@pytest.mark.parametrize("profile", ["v53", "head"])
def test_unknown_path_and_wrong_method_reach_handler(fakechv_server: Any, profile: str) -> None:
    handler = RecordingHandler()
    srv = fakechv_server(profile, handler=handler)
    res = unix_http(srv.path, "GET", "/api/v1/nope")
    assert (res.status, res.json) == (404, ["Not Found"])
    res = unix_http(srv.path, "DELETE", "/api/v1/vmm.ping")
    if profile == "head":  # micro_http 7975fe0 parses DELETE: CHV's router answers
        assert res.status == 404
        assert [(r.method, r.path) for r in handler.requests] == [
            ("GET", "/api/v1/nope"),
            ("DELETE", "/api/v1/vmm.ping"),
        ]
    else:  # micro_http 5c2254d does not know DELETE
        assert res.status == 400
        assert res.headers["Server"] == "Firecracker API"
        assert [(r.method, r.path) for r in handler.requests] == [("GET", "/api/v1/nope")]


def test_serve_forever_stops_on_shutdown_request(tmp_path: Any) -> None:
    from fakechv.server import serve_forever

    path = str(tmp_path / "s.sock")
    handler = RecordingHandler()

    async def scenario() -> tuple[str, int]:
        server = await start_server(handler, path=path)
        task = asyncio.create_task(serve_forever(server, handle_signals=False))
        res = await asyncio.to_thread(unix_http, path, "PUT", "/api/v1/vmm.shutdown")
        reason = await asyncio.wait_for(task, 10)
        return reason, res.status

    assert asyncio.run(scenario()) == ("shutdown", 200)
    assert not os.path.exists(path)


def test_expect_100_continue(fakechv_server: Any) -> None:
    handler = RecordingHandler()
    srv = fakechv_server(handler=handler)
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    try:
        sock.connect(srv.path)
        sock.sendall(
            b"PUT /api/v1/vm.add-net HTTP/1.1\r\nHost: localhost\r\nContent-Length: 12\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == (
            b"HTTP/1.1 100 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n"
        )
        sock.sendall(b'{"id":"n0"} ')
        assert sock.recv(1000).startswith(b"HTTP/1.1 204")
    finally:
        sock.close()
    assert handler.requests[-1].body == b'{"id":"n0"} '


def test_request_without_host_header_is_served(fakechv_server: Any) -> None:
    """micro_http needs no Host header (HTTP/1.0 and 1.1 alike), and always answers
    HTTP/1.1 with an empty reason phrase, Connection: keep-alive and no Date."""
    handler = RecordingHandler()
    srv = fakechv_server(handler=handler)
    for version in (b"HTTP/1.1", b"HTTP/1.0"):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(10)
        try:
            sock.connect(srv.path)
            sock.sendall(b"GET /api/v1/vmm.ping " + version + b"\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                chunk = sock.recv(4096)
                assert chunk
                answer += chunk
        finally:
            sock.close()
        assert answer == (
            b"HTTP/1.1 200 \r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n"
            b'Content-Type: application/json\r\nContent-Length: 20\r\n\r\n{"version":"53.0.0"}'
        )
