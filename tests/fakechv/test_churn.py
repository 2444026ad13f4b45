"""fakechv under connection churn and hostile clients: no descriptor outlives its
connection, and the API socket of another live process is never taken.

Every test here runs against a real ``fakechv`` child process and counts its
descriptors in ``/proc/PID/fd``.
"""

from __future__ import annotations

import array
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import child_env, fakechv_command, unix_http, wait_for_ping

pytestmark = pytest.mark.slow

PING = b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n"


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _baseline(pid: int) -> int:
    """The fd count of an idle fakechv (the lowest seen over a short while)."""
    lowest = _fd_count(pid)
    for _ in range(10):
        time.sleep(0.02)
        lowest = min(lowest, _fd_count(pid))
    return lowest


def _settle(pid: int, baseline: int, timeout: float = 5.0) -> int:
    """The fd count once it is back at ``baseline`` (or the last seen after ``timeout``)."""
    deadline = time.monotonic() + timeout
    count = _fd_count(pid)
    while count > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
        count = _fd_count(pid)
    return count


def _ping_after_churn(path: str, timeout: float = 5.0) -> int:
    """vmm.ping's status once the server has taken the churn's last connections off its
    backlog: closed connections it has not read the EOF of yet still count against
    micro_http's 10 (a 503 then, as on CHV), so a 503 is retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    status = unix_http(path, "GET", "/api/v1/vmm.ping").status
    while status == 503 and time.monotonic() < deadline:
        time.sleep(0.02)
        status = unix_http(path, "GET", "/api/v1/vmm.ping").status
    return status


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)  # blocking: waits while the listen backlog is full
    sock.settimeout(5)
    return sock


def _read_response(sock: socket.socket) -> bytes:
    """One whole response (headers + Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _pipe_holders(pid: int, inode: int) -> int:
    holders = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == f"pipe:[{inode}]":
                holders += 1
        except OSError:
            continue
    return holders


def _send_with_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    sock.sendmsg([data], anc)


def _churn(path: str, kind: str, count: int) -> None:
    """``count`` connections of one hostile kind, each closed as its kind says."""
    for _ in range(count):
        sock = _connect(path)
        try:
            if kind == "request":  # curl: one request, close right after the response
                sock.sendall(PING)
                assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
            elif kind == "idle":
                pass
            elif kind == "mid-request":
                sock.sendall(b"GET /api/v1/vmm.pi")
            elif kind == "mid-body":
                sock.sendall(b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 500\r\n\r\n{")
            elif kind == "half-closed":
                sock.sendall(PING)
                sock.shutdown(socket.SHUT_WR)
                assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
            elif kind == "pipelined":
                sock.sendall(PING * 3)
                answers = b""
                while answers.count(b"HTTP/1.1 200 ") < 3 or not answers.endswith(b"]}"):
                    chunk = sock.recv(4096)
                    assert chunk, "connection closed before three answers"
                    answers += chunk
            elif kind == "garbage":
                sock.sendall(b"\x00\xff nonsense \r\n\r\n")
                assert _read_response(sock).startswith(b"HTTP/1.1 400 ")
        finally:
            sock.close()


@pytest.fixture
def fakechv_proc(tmp_path: Path) -> Any:
    path = str(tmp_path / "api.sock")
    log = open(tmp_path / "fakechv.log", "wb")
    proc = subprocess.Popen(
        fakechv_command("--api-socket", f"path={path}"),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_env(),
    )
    try:
        wait_for_ping(path, proc)
        yield proc, path
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_a_thousand_connections_leave_no_descriptor(fakechv_proc: Any) -> None:
    proc, path = fakechv_proc
    baseline = _baseline(proc.pid)
    _churn(path, "request", 1000)
    assert _settle(proc.pid, baseline) == baseline
    assert _ping_after_churn(path) == 200


@pytest.mark.parametrize(
    "kind", ["idle", "mid-request", "mid-body", "half-closed", "pipelined", "garbage"]
)
def test_hostile_connections_leave_no_descriptor(fakechv_proc: Any, kind: str) -> None:
    proc, path = fakechv_proc
    baseline = _baseline(proc.pid)
    _churn(path, kind, 200)
    assert _settle(proc.pid, baseline) == baseline
    assert _ping_after_churn(path) == 200


@pytest.mark.parametrize("cut", ["mid-body", "before-headers-end", "bad-request-line"])
def test_fds_of_a_cut_request_are_closed(fakechv_proc: Any, cut: str) -> None:
    proc, path = fakechv_proc
    baseline = _baseline(proc.pid)
    head = {
        "mid-body": b"PUT /api/v1/vm.add-net HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
        "before-headers-end": b"PUT /api/v1/vm.add-net HTTP/1.1\r\nContent-Len",
        "bad-request-line": b"PUT /api/v1/vm.add-net HTTP/9.9\r\n\r\n",
    }[cut]
    for _ in range(50):
        r, w = os.pipe()
        inode = os.fstat(r).st_ino
        sock = _connect(path)
        try:
            _send_with_fds(sock, head, [r, w])
            if cut == "bad-request-line":
                assert _read_response(sock).startswith(b"HTTP/1.1 400 ")
            else:
                time.sleep(0.002)
        finally:
            sock.close()
            os.close(r)
            os.close(w)
        deadline = time.monotonic() + 5
        while _pipe_holders(proc.pid, inode) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _pipe_holders(proc.pid, inode) == 0
    assert _settle(proc.pid, baseline) == baseline


def _wait_fds(pid: int, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _fd_count(pid) != count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _fd_count(pid) == count


def test_eleventh_connection_gets_micro_http_503(fakechv_proc: Any) -> None:
    proc, path = fakechv_proc
    baseline = _baseline(proc.pid)
    _wait_fds(proc.pid, baseline)  # the start-up ping's connection is gone
    held = [_connect(path) for _ in range(10)]
    try:
        _wait_fds(proc.pid, baseline + 10)  # all ten accepted
        extra = _connect(path)
        try:
            answer = _read_response(extra)
        finally:
            extra.close()
        assert answer == (
            b"HTTP/1.1 503\r\nServer: Firecracker API\r\nConnection: close\r\n"
            b'Content-Length: 40\r\n\r\n{ "error": "Too many open connections" }'
        )
        held[0].sendall(PING)  # the ten are still served
        assert _read_response(held[0]).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.1)
    assert unix_http(path, "GET", "/api/v1/vmm.ping").status == 200


# --------------------------------------------------------------------------- sockets
def _start(path: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        fakechv_command("--api-socket", f"path={path}", *extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("profile", ["v52", "v53"])
def test_a_live_socket_is_never_taken(tmp_path: Path, profile: str) -> None:
    path = str(tmp_path / "api.sock")
    first = _start(path, "--profile", profile)
    try:
        wait_for_ping(path, first)
        inode = os.stat(path).st_ino
        second = _start(path, "--profile", profile)
        _out, err = second.communicate(timeout=10)
        assert second.returncode == 1
        assert "already in use by another running instance" in err.decode()
        assert "Traceback" not in err.decode()
        assert os.stat(path).st_ino == inode
        assert unix_http(path, "GET", "/api/v1/vmm.ping").status == 200
    finally:
        _stop(first)


def test_a_socket_that_answers_without_the_lock_is_not_taken(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    other = socket.socket(socket.AF_UNIX)
    other.bind(path)
    other.listen(1)
    try:
        proc = _start(path)
        _out, err = proc.communicate(timeout=10)
        assert proc.returncode == 1
        assert "already in use" in err.decode()
        probe = _connect(path)
        probe.close()
    finally:
        other.close()


def test_a_stale_socket_is_replaced_under_the_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # a socket file nobody answers on: a crashed run's
    proc = _start(path, "--profile", "v53")
    try:
        wait_for_ping(path, proc)
    finally:
        _stop(proc)
    assert not os.path.exists(path)


def test_v52_refuses_any_file_at_the_socket_path(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    proc = _start(path, "--profile", "v52")
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1  # v52 binds the path as it is: EADDRINUSE
    assert "Address already in use" in err.decode()
    assert os.path.exists(path)


def test_exit_removes_the_path_only_while_it_is_ours(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    proc = _start(path)
    try:
        wait_for_ping(path, proc)
        os.unlink(path)  # someone else takes the path meanwhile
        replacement = socket.socket(socket.AF_UNIX)
        replacement.bind(path)
        replacement.listen(1)
    finally:
        _stop(proc)
    try:
        assert os.path.exists(path)
        probe = _connect(path)
        probe.close()
    finally:
        replacement.close()
