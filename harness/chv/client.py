"""A thin, typed client of Cloud Hypervisor's HTTP API.

One method per endpoint, JSON in and out, and every error turned into a
:class:`ChvError` carrying CHV's status and message chain. The transport is
pluggable:

* :class:`UnixSocketTransport` speaks HTTP over the API socket (a real
  ``cloud-hypervisor`` or a ``fakechv`` process);
* :class:`InProcessTransport` hands the same request values straight to a
  ``fakechv`` handler in this process (fast simulations).

With ``profile`` set, every request and response is checked against that
release's official spec (:mod:`harness.chv.spec`); with ``strict`` a request may not
carry fields the release does not know. Each exchange is reported to the
optional ``observer`` so runners can record a trace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fakechv.wire import ApiRequest, ApiResponse, Handler
from harness.chv import spec
from harness.chv.capabilities import KINDS
from harness.errors import HarnessError

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "ChvClient",
    "ChvError",
    "Exchange",
    "InProcessTransport",
    "Transport",
    "UnixSocketTransport",
]


class ChvError(HarnessError):
    """CHV answered an API call with an error (or the call could not be made)."""

    def __init__(self, endpoint: str, status: int, messages: Sequence[str]) -> None:
        self.endpoint = endpoint
        self.status = status
        self.messages = list(messages)
        chain = ": ".join(self.messages) if self.messages else "no message"
        super().__init__(f"CHV {endpoint} failed ({status}): {chain}")


@dataclass(frozen=True)
class Exchange:
    """One request/response pair, as recorded in traces."""

    method: str
    endpoint: str
    request: object | None
    status: int
    response: object | None
    seconds: float


class Transport(Protocol):
    async def send(self, request: ApiRequest) -> ApiResponse: ...

    async def close(self) -> None: ...


class InProcessTransport:
    """Calls a fakechv handler directly (no sockets)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def send(self, request: ApiRequest) -> ApiResponse:
        return await self.handler.handle(request)

    async def close(self) -> None:
        return None


class UnixSocketTransport:
    """HTTP/1.1 over CHV's Unix API socket (keep-alive, one session)."""

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp  # only the process targets speak HTTP: in-process runs never load it

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.path),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(self, request: ApiRequest) -> ApiResponse:
        if request.fds:
            raise ValueError("UnixSocketTransport cannot pass file descriptors")
        import aiohttp

        headers = {"Content-Type": "application/json"} if request.body else {}
        try:
            async with self._get_session().request(
                request.method,
                "http://localhost" + request.path,
                data=request.body or None,
                headers=headers,
            ) as resp:
                body = await resp.read()
                return ApiResponse(resp.status, body, dict(resp.headers))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            name = request.path.rsplit("/", 1)[-1]
            raise ChvError(name, 0, [f"cannot reach CHV API socket {self.path}: {exc}"]) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _decode(body: bytes) -> object | None:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


class ChvClient:
    """Typed CHV API client over a :class:`Transport`."""

    def __init__(
        self,
        transport: Transport,
        *,
        profile: str | None = None,
        strict: bool = True,
        observer: Callable[[Exchange], None] | None = None,
        rewrite: Callable[[str, object], object] | None = None,
    ) -> None:
        """``rewrite(endpoint, body)``: what is sent instead of ``body`` (a driver quirk's
        wire format, :mod:`harness.driver.quirks`); traces and spec checks see what
        was sent."""
        self.transport = transport
        self.profile = profile
        self.strict = strict
        self.observer = observer
        self.rewrite = rewrite

    async def call(self, method: str, endpoint: str, body: object | None = None) -> object | None:
        """Send one request; return the decoded JSON body (None when empty).

        Raises :class:`ChvError` for any 4xx/5xx answer.
        """
        if self.rewrite is not None and body is not None:
            body = self.rewrite(endpoint, body)
        raw = json.dumps(body).encode() if body is not None else b""
        started = time.perf_counter()
        resp = await self.transport.send(ApiRequest(method, "/api/v1/" + endpoint, raw))
        decoded = _decode(resp.body)
        if self.observer is not None:
            self.observer(
                Exchange(
                    method, endpoint, body, resp.status, decoded, time.perf_counter() - started
                )
            )
        if self.profile is not None:
            spec.check_exchange(
                self.profile,
                method,
                "/api/v1/" + endpoint,
                body,
                resp.status,
                decoded,
                strict=self.strict,
            )
        if resp.status >= 400:
            if isinstance(decoded, list):
                messages = [str(m) for m in decoded]
            else:
                messages = [str(decoded)]
            raise ChvError(endpoint, resp.status, messages)
        return decoded

    async def close(self) -> None:
        await self.transport.close()

    # -- vmm ---------------------------------------------------------------
    async def ping(self) -> dict[str, Any]:
        return _as_dict(await self.call("GET", "vmm.ping"), "vmm.ping")

    async def vmm_shutdown(self) -> None:
        await self.call("PUT", "vmm.shutdown")

    # -- vm lifecycle ----------------------------------------------------------
    async def create(self, config: dict[str, Any]) -> None:
        await self.call("PUT", "vm.create", config)

    async def boot(self) -> None:
        await self.call("PUT", "vm.boot")

    async def shutdown(self) -> None:
        await self.call("PUT", "vm.shutdown")

    async def reboot(self) -> None:
        await self.call("PUT", "vm.reboot")

    async def power_button(self) -> None:
        await self.call("PUT", "vm.power-button")

    async def pause(self) -> None:
        await self.call("PUT", "vm.pause")

    async def resume(self) -> None:
        await self.call("PUT", "vm.resume")

    async def delete(self) -> None:
        await self.call("PUT", "vm.delete")

    async def info(self) -> dict[str, Any]:
        return _as_dict(await self.call("GET", "vm.info"), "vm.info")

    async def counters(self) -> dict[str, Any]:
        return _as_dict(await self.call("GET", "vm.counters"), "vm.counters")

    # -- devices -------------------------------------------------------------
    async def add_device(self, kind: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Hot or cold add; returns ``{"id","bdf"}`` when booted, None when cold."""
        row = KINDS.get(kind)
        endpoint = row.add_endpoint if row is not None else None
        if endpoint is None:
            raise ValueError(f"no CHV add endpoint for device kind {kind!r}")
        result = await self.call("PUT", endpoint, body)
        return None if result is None else _as_dict(result, endpoint)

    async def remove_device(self, device_id: str) -> None:
        await self.call("PUT", "vm.remove-device", {"id": device_id})

    # -- snapshot and migration ------------------------------------------------
    async def snapshot(self, destination_url: str) -> None:
        await self.call("PUT", "vm.snapshot", {"destination_url": destination_url})

    async def restore(self, source_url: str) -> None:
        await self.call("PUT", "vm.restore", {"source_url": source_url})

    async def send_migration(self, destination_url: str) -> None:
        await self.call("PUT", "vm.send-migration", {"destination_url": destination_url})

    async def receive_migration(self, receiver_url: str) -> None:
        await self.call("PUT", "vm.receive-migration", {"receiver_url": receiver_url})


def _as_dict(value: object | None, endpoint: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ChvError(endpoint, 200, [f"expected a JSON object, got {value!r}"])
    return value
