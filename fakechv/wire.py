"""Transport-neutral request and response values of the CHV HTTP API.

The HTTP server (``fakechv.server``) turns each HTTP request into an
:class:`ApiRequest` and sends back the :class:`ApiResponse` it gets from a
:class:`Handler`; an in-process transport (used by fast simulations) calls the
same handler directly, so both paths share every rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

API_PREFIX = "/api/v1/"
SERVER_HEADER = "Cloud Hypervisor API"


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request: method, path (``/api/v1/vm.info``), raw body, and the
    file descriptors that came with it over SCM_RIGHTS (owned by the handler,
    which must close them)."""

    method: str
    path: str
    body: bytes = b""
    fds: tuple[int, ...] = ()


@dataclass(frozen=True)
class ApiResponse:
    """One HTTP response. ``body`` is empty for 204 and for empty 200s."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Handler(Protocol):
    """Anything that answers API requests (``fakechv.api.Api``)."""

    async def handle(self, request: ApiRequest) -> ApiResponse: ...
