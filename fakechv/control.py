"""A client for fakechv's own control surface, under ``/fakechv/v1/``.

The control surface is fakechv's, not CHV's (served by :class:`fakechv.api.Api`,
documented there): fault injection and the emulated guest's eject. The
``*_request`` functions build the :class:`fakechv.wire.ApiRequest` of each
control call for any transport (the HTTP socket, or an in-process
:class:`fakechv.api.Api`); :class:`Control` sends them through an ``async
send(request) -> response`` callable and raises :class:`ControlError` when
fakechv refuses one.

Bodies are built as given, not checked: a rule or an eject mode fakechv does
not accept is its to refuse (400 with a one-line message).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from fakechv.faults import FaultRule
from fakechv.wire import ApiRequest, ApiResponse

__all__ = [
    "CONTROL_PREFIX",
    "EJECT_NOW_PATH",
    "EJECT_PATH",
    "FAULTS_PATH",
    "Control",
    "ControlError",
    "Send",
    "eject_now_request",
    "eject_request",
    "eject_status_request",
    "faults_clear_request",
    "faults_list_request",
    "faults_request",
]

CONTROL_PREFIX = "/fakechv/v1/"
FAULTS_PATH = CONTROL_PREFIX + "faults"
EJECT_PATH = CONTROL_PREFIX + "eject"
EJECT_NOW_PATH = CONTROL_PREFIX + "eject-now"

#: what :class:`Control` sends requests with
Send = Callable[[ApiRequest], Awaitable[ApiResponse]]


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def faults_request(rules: Iterable[FaultRule | Mapping[str, Any]]) -> ApiRequest:
    """``PUT /fakechv/v1/faults``: append fault rules (a :class:`FaultRule` or its
    JSON form ``{"endpoint", "count", "status", "messages"}``)."""
    items = [r.to_json() if isinstance(r, FaultRule) else dict(r) for r in rules]
    return ApiRequest("PUT", FAULTS_PATH, _json(items))


def faults_list_request() -> ApiRequest:
    """``GET /fakechv/v1/faults``: the active rules."""
    return ApiRequest("GET", FAULTS_PATH)


def faults_clear_request() -> ApiRequest:
    """``DELETE /fakechv/v1/faults``: drop every rule."""
    return ApiRequest("DELETE", FAULTS_PATH)


def eject_request(mode: str, delay_ms: int | None = None) -> ApiRequest:
    """``PUT /fakechv/v1/eject``: when the guest ejects removed devices:
    ``immediate``, ``never``, or ``delay`` by ``delay_ms`` (left out when None)."""
    body: dict[str, Any] = {"mode": mode}
    if delay_ms is not None:
        body["delay_ms"] = delay_ms
    return ApiRequest("PUT", EJECT_PATH, _json(body))


def eject_status_request() -> ApiRequest:
    """``GET /fakechv/v1/eject``: the policy and the devices awaiting eject."""
    return ApiRequest("GET", EJECT_PATH)


def eject_now_request(device_id: str) -> ApiRequest:
    """``PUT /fakechv/v1/eject-now``: the guest ejects ``device_id`` now (404 if it
    is not awaiting eject)."""
    return ApiRequest("PUT", EJECT_NOW_PATH, _json({"id": device_id}))


class ControlError(Exception):
    """fakechv refused a control request (a 4xx, or a 5xx from a fakechv bug)."""

    def __init__(self, request: ApiRequest, response: ApiResponse) -> None:
        self.status = response.status
        self.body = response.body
        try:
            decoded = json.loads(response.body) if response.body else []
        except ValueError:
            decoded = [response.body.decode(errors="replace")]
        if not isinstance(decoded, list):
            decoded = [decoded]
        #: the error lines of the answer (fakechv sends one)
        self.messages: list[str] = [str(m) for m in decoded]
        text = "; ".join(self.messages) or "(no message)"
        super().__init__(f"{request.method} {request.path}: {self.status}: {text}")


class Control:
    """fakechv's control calls over ``send`` (e.g. a harness transport's ``send``,
    or ``Api(...).handle``)."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def _call(self, request: ApiRequest) -> Any:
        response = await self._send(request)
        if response.status >= 400:
            raise ControlError(request, response)
        return json.loads(response.body) if response.body else None

    async def add_faults(self, rules: Iterable[FaultRule | Mapping[str, Any]]) -> None:
        await self._call(faults_request(rules))

    async def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call(faults_list_request())
        return result

    async def clear_faults(self) -> None:
        await self._call(faults_clear_request())

    async def set_eject(self, mode: str, delay_ms: int | None = None) -> None:
        await self._call(eject_request(mode, delay_ms))

    async def eject_status(self) -> dict[str, Any]:
        """``{"mode", "delay_ms", "pending": {device id: BDF}}``."""
        result: dict[str, Any] = await self._call(eject_status_request())
        return result

    async def eject_now(self, device_id: str) -> None:
        """Eject ``device_id`` now; :class:`ControlError` (404) if it is not pending."""
        await self._call(eject_now_request(device_id))
