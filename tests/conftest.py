"""Shared fixtures: real fakechv servers reached over real Unix sockets.

``fakechv_server`` runs ``fakechv.server`` with the real ``Api``/``Vmm`` in a
background thread (own event loop, temp socket); ``spawn_fakechv`` starts the
``fakechv`` command as a child process. Both talk HTTP/1.1 over AF_UNIX (with
SCM_RIGHTS for ``fds=``) and check every exchange against the profile's
official OpenAPI spec through ``harness.chv.spec.check_exchange``.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import http.client
import inspect
import json as jsonlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fakechv.api import Api
from fakechv.profiles import get_profile
from fakechv.server import server_options, start_server
from fakechv.vmm import Vmm
from fakechv.wire import ApiRequest
from harness.chv.spec import check_exchange
from harness.model import readcache

# every cached read of a definition is checked against a fresh one: a change that
# bypasses harness.model.domain fails the test that makes it
readcache.verify()
# and every vm.info answer fakechv keeps, in this process and in the fakechv processes
# the tests start
os.environ["FAKECHV_VERIFY_CACHES"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]
API_PREFIX = "/api/v1/"
T = TypeVar("T")


class Headers(dict[str, str]):
    """Response headers with case-insensitive lookup (keys stored lower-case)."""

    def __init__(self, items: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class HttpResult:
    """One HTTP answer: status, headers, raw body, and the body parsed as JSON
    (``None`` when empty or not JSON)."""

    status: int
    headers: Headers
    body: bytes
    json: Any = None


def api_path(name_or_path: str) -> str:
    """``"vm.info"`` -> ``"/api/v1/vm.info"``; paths starting with ``/`` are kept."""
    return name_or_path if name_or_path.startswith("/") else API_PREFIX + name_or_path


def unix_http(
    sock_path: str,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    fds: Sequence[int] = (),
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> HttpResult:
    """Send one HTTP/1.1 request on a new AF_UNIX connection (the head and the
    first body bytes in one ``sendmsg`` carrying ``fds`` as SCM_RIGHTS, like
    libvirt) and read the answer."""
    hdrs = {"Host": "localhost", "Accept": "*/*"}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
        hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    data = head.encode() + b"\r\n" + (body or b"")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(sock_path)
        try:
            if fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
                sent = sock.sendmsg([data], anc)
                sock.sendall(data[sent:])
            else:
                sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (e.g. body too large): read its answer
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        raw = resp.read()
        result = HttpResult(resp.status, Headers(resp.getheaders()), raw)
    finally:
        sock.close()
    if raw:
        with contextlib.suppress(ValueError):
            result.json = jsonlib.loads(raw)
    return result


def _check_spec(
    profile: str, method: str, path: str, request_body: object | None, result: HttpResult
) -> None:
    check_exchange(profile, method, path, request_body, result.status, result.json)


class _Client:
    profile: str
    path: str

    def request(
        self,
        method: str,
        name_or_path: str,
        json: object = None,
        raw: bytes | None = None,
        fds: Sequence[int] = (),
        *,
        check: bool = True,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> HttpResult:
        """One exchange over the real socket, checked against the official spec
        of the profile (``check=False`` for deliberately malformed requests)."""
        path = api_path(name_or_path)
        body = raw if raw is not None else (None if json is None else jsonlib.dumps(json).encode())
        result = unix_http(self.path, method, path, body, fds=fds, headers=headers, timeout=timeout)
        if check:
            req_body: object | None = json
            if raw is not None:
                req_body = None
                with contextlib.suppress(ValueError):
                    req_body = jsonlib.loads(raw)
            _check_spec(self.profile, method, path, req_body, result)
        return result

    def send(self, request: ApiRequest, *, check: bool = True, timeout: float = 10.0) -> HttpResult:
        """One exchange of a built request (e.g. from ``fakechv.control``), as
        :meth:`request` does it."""
        return self.request(
            request.method,
            request.path,
            raw=request.body or None,
            fds=request.fds,
            check=check,
            timeout=timeout,
        )

    def get(self, name_or_path: str, **kw: Any) -> HttpResult:
        return self.request("GET", name_or_path, **kw)

    def put(self, name_or_path: str, json: object = None, **kw: Any) -> HttpResult:
        return self.request("PUT", name_or_path, json, **kw)


class _LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


def _split_options(
    vmm_cls: Any, options: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        params = inspect.signature(vmm_cls).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    vmm_kw = {k: v for k, v in options.items() if k in params}
    api_kw = {k: v for k, v in options.items() if k not in params}
    return vmm_kw, api_kw


@dataclass
class FakechvHandle(_Client):
    """A running in-process fakechv: ``.path``, ``.events``, ``.api``, ``.vmm``,
    ``.server``, ``.request(...)``, and ``.call(coro)`` to run a coroutine on
    the server's loop."""

    profile: str
    path: str
    api: Any
    vmm: Any
    server: Any
    events: list[dict[str, Any]]
    _thread: _LoopThread = field(repr=False)
    closed: bool = False

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return self._thread.run(coro, timeout)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._thread.run(self.server.close(), 10)
        self._thread.stop()
        if self.vmm is not None:  # the process "exits": the fds the VMM kept go
            self.vmm.held_fds.close_all()


def _make_real_handler(
    profile: str, events: list[dict[str, Any]], options: Mapping[str, Any]
) -> tuple[Api, Vmm]:
    vmm_kw, api_kw = _split_options(Vmm, options)
    vmm = Vmm(get_profile(profile), event_sink=events.append, **vmm_kw)
    return Api(vmm, **api_kw), vmm


@pytest.fixture
def fakechv_server() -> Iterator[Callable[..., FakechvHandle]]:
    """Factory ``start(profile="v53", handler=None, **api_options) -> handle``.

    Runs the real server with ``Api(Vmm(get_profile(profile), event_sink=...))``
    (or the given ``handler``) on a temporary Unix socket in a background
    thread. ``api_options`` go to ``Vmm`` when its signature names them (e.g.
    ``eject=``), otherwise to ``Api`` (e.g. ``faults=``)."""
    handles: list[FakechvHandle] = []
    tmpdirs: list[str] = []

    def start(profile: str = "v53", handler: Any = None, **api_options: Any) -> FakechvHandle:
        tmp = tempfile.mkdtemp(prefix="fakechv-")
        tmpdirs.append(tmp)
        sock_path = os.path.join(tmp, "api.sock")
        events: list[dict[str, Any]] = []
        thread = _LoopThread()

        async def build() -> tuple[Any, Any, Any]:
            if handler is not None:
                api, vmm = handler, getattr(handler, "vmm", None)
            else:
                api, vmm = _make_real_handler(profile, events, api_options)
            server = await start_server(api, path=sock_path, **server_options(profile))
            return api, vmm, server

        try:
            api, vmm, server = thread.run(build())
        except BaseException:
            thread.stop()
            raise
        handle = FakechvHandle(profile, sock_path, api, vmm, server, events, thread)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.close()
    for tmp in tmpdirs:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class SpawnedFakechv(_Client):
    """A ``fakechv`` child process: ``.proc``, ``.path`` (API socket),
    ``.log_path`` (its stderr), ``.request(...)``, ``.stop()``."""

    profile: str
    path: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_for_ping(
    path: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 15.0,
    log_path: Path | None = None,
) -> None:
    """Poll ``vmm.ping`` on ``path`` until it answers 200."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            log = log_path.read_text(errors="replace") if log_path else ""
            raise AssertionError(f"fakechv exited with {proc.returncode} before answering:\n{log}")
        try:
            if unix_http(path, "GET", API_PREFIX + "vmm.ping", timeout=2).status == 200:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.02)
    raise AssertionError(f"fakechv on {path} did not answer vmm.ping: {last}")


def fakechv_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fakechv", *args]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("FAKECHV_PROFILE", None)
    env.update(extra or {})
    return env


@pytest.fixture
def spawn_fakechv(tmp_path: Path) -> Iterator[Callable[..., SpawnedFakechv]]:
    """Factory ``spawn(*args, profile=None, api_socket="auto", ping_path=None,
    pass_fds=(), env=None, wait=True) -> SpawnedFakechv``.

    By default adds ``--api-socket path=<tmp>/api-N.sock`` (and ``--profile``
    when ``profile`` is given). With ``api_socket=None`` the caller passes its
    own socket arguments and gives ``ping_path``. Waits for ``vmm.ping`` unless
    ``wait=False``; teardown terminates (then kills) every child. The tests name
    made-up images, so ``--images virtual`` is added unless ``args`` has ``--images``
    (a test of the image checks passes ``--images check``)."""
    children: list[SpawnedFakechv] = []

    def spawn(
        *args: str,
        profile: str | None = None,
        api_socket: str | None = "auto",
        ping_path: str | None = None,
        pass_fds: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> SpawnedFakechv:
        n = len(children)
        argv = list(args)
        if "--images" not in argv and "--version" not in argv:
            argv += ["--images", "virtual"]
        path = ping_path or ""
        if api_socket == "auto":
            path = str(tmp_path / f"api-{n}.sock")
            argv = ["--api-socket", f"path={path}", *argv]
        elif api_socket is not None:
            path = api_socket
            argv = ["--api-socket", f"path={api_socket}", *argv]
        if profile is not None:
            argv = ["--profile", profile, *argv]
        log_path = tmp_path / f"fakechv-{n}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                fakechv_command(*argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=tuple(pass_fds),
                env=child_env(env),
                cwd=str(tmp_path),
            )
        eff_profile = profile or (env or {}).get("FAKECHV_PROFILE", "v53")
        child = SpawnedFakechv(eff_profile, path, proc, log_path)
        children.append(child)
        if wait and path:
            wait_for_ping(path, proc, log_path=log_path)
        return child

    yield spawn
    for child in children:
        child.stop()
