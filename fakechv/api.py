"""CHV's HTTP API over an in-memory :class:`fakechv.vmm.Vmm`.

:class:`Api` implements :class:`fakechv.wire.Handler`. Routing, status codes,
error bodies and headers follow vmm/src/api/http/{mod.rs,http_endpoint.rs} of
the profile's release:

* unknown path -> 404 ``["Not Found"]``;
* a method other than GET/PUT on an action endpoint -> 400 with an empty body
  (``EndpointHandler::handle_request``); a wrong GET/PUT, a body on an action
  that takes none, or no body where one is needed -> 400 ``["Bad Request"]``;
  vm.create without a body -> 400 with an empty body;
* a body serde refuses -> 400 ``["Failed to deserialize JSON", "<serde message>"]``;
* vm.add-device with more than one fd -> 400 ``["Bad Request"]`` (checked first);
* API errors -> the profile's status (:func:`fakechv.errors.status_for`) and the
  message chain;
* success: 204 without body; 200 with JSON for vm.info, vmm.ping, vm.counters
  and an add-* on a booted VM; vmm.shutdown answers 200 with an empty body;
* every response carries ``Server: Cloud Hypervisor API``; ``Content-Type:
  application/json`` is set on every response by ``handle_http_request`` and
  micro_http (Cargo.lock@v53.0: micro-http 5c2254d, src/response.rs
  ``Response::new``) writes it, with ``Content-Length``, for every status but
  204: an empty 200 or 400 says ``Content-Length: 0`` (seen on CHV v53.0);
* the path is matched whole: ``/api/v1/vm.info?x=1`` is a 404, as on CHV.

State changes are serialized by an asyncio lock and are transactional: a
rejected request leaves the VMM unchanged (see :mod:`fakechv.device_manager` for the one
trace CHV itself leaves). The handler closes every fd it receives.

Control surface (fakechv's own, not CHV's), under ``/fakechv/v1/``:

* ``PUT /fakechv/v1/faults`` with a JSON list of rules
  ``{"endpoint": "vm.add-disk", "count": 1, "status": 500, "messages": [...]}``
  appends them; ``GET`` lists the active rules; ``DELETE`` clears them;
* ``PUT /fakechv/v1/eject`` ``{"mode": "immediate"|"delay"|"realistic"|"never", "delay_ms": N}``
  sets when the guest ejects removed devices; ``GET`` shows the policy and the
  devices awaiting eject;
* ``PUT /fakechv/v1/eject-now`` ``{"id": "_disk0"}`` ejects a pending device now
  (404 if it is not pending).

Control answers are 204, 200 with JSON, or 400/404 with a JSON array message.
:mod:`fakechv.control` builds these requests and sends them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable
from typing import Any

from fakechv.config import ConfigError, deserialize_bytes
from fakechv.control import CONTROL_PREFIX
from fakechv.devices import ADD_ENDPOINTS, DEVICE_KINDS
from fakechv.errors import AFTER_PANIC_ANSWER, PANIC_ANSWER, ApiError, error_body, status_for
from fakechv.faults import FaultRule, FaultSet
from fakechv.serde import from_slice
from fakechv.serde_errors import SerdeError
from fakechv.serde_types import AnyValue
from fakechv.vcpus import VcpuThreads
from fakechv.vmm import EjectPolicy, Vmm
from fakechv.wire import API_PREFIX, SERVER_HEADER, ApiRequest, ApiResponse

__all__ = ["CONTROL_PREFIX", "DEFAULT_MAX_BODY", "Api"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 4 << 20

_HEADERS = {"Server": SERVER_HEADER, "Content-Type": "application/json"}
#: endpoints with their own handle_request (any other method -> ["Bad Request"])
_CUSTOM = {"vm.create", "vm.info", "vmm.ping", "vmm.shutdown"}
#: body schemas of the non-device endpoints
_BODY_SCHEMAS = {
    "vm.remove-device": "VmRemoveDeviceData",
    "vm.resize": "VmResizeData",
    "vm.resize-disk": "VmResizeDiskData",
    "vm.resize-zone": "VmResizeZoneData",
    "vm.snapshot": "VmSnapshotConfig",
    "vm.restore": "RestoreConfig",
    "vm.send-migration": "VmSendMigrationData",
    "vm.receive-migration": "VmReceiveMigrationData",
}


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _resp(status: int, body: bytes = b"") -> ApiResponse:
    headers = dict(_HEADERS)
    if status == 204:
        # micro_http's Response::new gives every status but 100 and 204 a length,
        # and with it the Content-Type CHV sets (``Content-Length: 0`` when empty)
        del headers["Content-Type"]
    return ApiResponse(status, body, headers)


def _error(status: int, messages: list[str]) -> ApiResponse:
    return _resp(status, error_body(messages))


class _Reply(Exception):
    def __init__(self, response: ApiResponse) -> None:
        super().__init__(response.status)
        self.response = response


class Api:
    """The HTTP API of one fakechv VMM."""

    def __init__(
        self,
        vmm: Vmm,
        *,
        faults: FaultSet | Iterable[FaultRule] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        vcpu_threads: VcpuThreads | None = None,
    ) -> None:
        self.vmm = vmm
        #: the process's ``vcpu*`` threads, matched to the VM after each change
        self.vcpu_threads = vcpu_threads
        self.profile = vmm.profile
        if faults is None:
            faults = FaultSet()
        elif not isinstance(faults, FaultSet):
            faults = FaultSet(list(faults))
        self.faults = faults
        self.max_body = max_body
        self.shutdown_requested = asyncio.Event()
        #: the exit status of the process once shutdown_requested is set (1: the VMM
        #: thread panicked, as CHV's main returns then)
        self.exit_code = 0
        #: the VMM thread panicked: every request gets AFTER_PANIC_ANSWER
        self.panicked = False
        #: the running (or last) migration worker of a v53+ profile
        self._migration_worker: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        #: the last vm.info answer, with the VMM's version it shows
        self._info: tuple[int, bytes] | None = None
        #: recompute every kept vm.info answer and fail on a stale one (the tests)
        self._verify_info = os.environ.get("FAKECHV_VERIFY_CACHES") == "1"

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def handle(self, request: ApiRequest) -> ApiResponse:
        """Answer one request; never raises. ``request.fds`` are closed unless the VMM
        keeps them (a net's taps, :mod:`fakechv.fds`)."""
        try:
            return await self._dispatch(request)
        except _Reply as reply:
            return reply.response
        except Exception as exc:  # a bug in fakechv must not kill the server
            return _error(500, ["Internal Server Error", f"fakechv: {type(exc).__name__}: {exc}"])
        finally:
            if self.vcpu_threads is not None:
                self.vcpu_threads.set(self.vmm.running_vcpus())
            held = set(self.vmm.held_fds.open_fds()) if request.fds else set()
            for fd in request.fds:
                if fd in held:
                    continue  # the VMM keeps it (fakechv.fds)
                try:
                    os.close(fd)
                except OSError:
                    pass

    # ------------------------------------------------------------ routing

    async def _dispatch(self, request: ApiRequest) -> ApiResponse:
        path = request.path  # CHV's router matches the whole path: a query string is a 404
        if path.startswith(CONTROL_PREFIX):
            return await self._control(
                request.method.upper(), path[len(CONTROL_PREFIX) :], request.body
            )
        if not path.startswith(API_PREFIX):
            return _error(404, ["Not Found"])
        name = path[len(API_PREFIX) :]
        route = self.profile.routes.get(name)
        if route is None:
            return _error(404, ["Not Found"])
        method = request.method.upper()
        has_body = len(request.body) > 0
        if method != route.method:
            if name in _CUSTOM or method in ("GET", "PUT"):
                return _error(400, ["Bad Request"])
            return _resp(400)
        if len(request.body) > self.max_body:
            return _error(400, ["Bad Request"])
        if route.method == "PUT":
            if route.body and not has_body:
                if name == "vm.create":
                    return _resp(400)
                return _error(400, ["Bad Request"])
            if not route.body and has_body and name not in _CUSTOM:
                return _error(400, ["Bad Request"])  # VmmShutdown ignores a body
        if name == "vm.add-device" and len(request.fds) > 1 and self.profile.add_device_refuses_fds:
            return _error(400, ["Bad Request"])
        body: Any = None
        if route.body:
            body = self._decode(name, request.body)
        rule = self.faults.take(name)
        if rule is not None:
            return _error(rule.status, list(rule.messages))
        if self.panicked:
            return _error(500, AFTER_PANIC_ANSWER)
        async with self.lock:
            if route.method == "GET":  # vmm.ping, vm.info, vm.counters change nothing
                try:
                    return await self._execute(name, body, request.fds)
                except ApiError as exc:
                    return _error(status_for(exc.kind, self.profile), exc.messages)
            saved = self.vmm.checkpoint()
            try:
                return await self._execute(name, body, request.fds)
            except ApiError as exc:
                if exc.panic:
                    log.error("the VMM thread panics: %s", exc.messages[-1])
                    self.panicked = True
                    self.exit_code = 1
                    self.shutdown_requested.set()
                    return _error(500, PANIC_ANSWER)
                if not exc.commit:
                    self.vmm.rollback(saved)
                return _error(status_for(exc.kind, self.profile), exc.messages)
            except BaseException:
                self.vmm.rollback(saved)
                raise

    def _decode(self, name: str, raw: bytes) -> Any:
        try:
            if name == "vm.create":
                schema = "VmConfig"
            elif name in ADD_ENDPOINTS:
                schema = DEVICE_KINDS[ADD_ENDPOINTS[name]].schema
            else:
                schema = _BODY_SCHEMAS[name]
            return deserialize_bytes(self.profile, schema, raw)
        except ConfigError as exc:
            raise _Reply(_error(400, ["Failed to deserialize JSON", str(exc)])) from None

    # ------------------------------------------------------------ actions

    async def _execute(self, name: str, body: Any, fds: tuple[int, ...]) -> ApiResponse:
        vmm = self.vmm
        if name == "vmm.ping":
            return _resp(
                200,
                _json_bytes(
                    {
                        "build_version": self.profile.build_version,
                        "version": self.profile.version,
                        "pid": os.getpid(),
                        "features": list(self.profile.features),
                    }
                ),
            )
        if name == "vm.info":
            return _resp(200, self._info_body())
        if name == "vm.counters":
            return _resp(200, _json_bytes(vmm.counters()))
        if name == "vm.create":
            for net in body.get("net") or []:
                net.pop("fds", None)  # vm.create drops net fds (EP:329-339)
            vmm.create(body)
            return _resp(204)
        if name in ADD_ENDPOINTS:
            body.pop("fds", None)
            body.pop("fd", None)
            kind = DEVICE_KINDS[ADD_ENDPOINTS[name]]
            taps = fds if kind.takes_fds else ()
            try:
                result = vmm.add_device(kind.name, body, fds=taps)
            except ApiError:
                vmm.held_fds.leak(taps)  # attached to the config, which is dropped unclosed
                raise
            if result is None:
                return _resp(204)
            return _resp(200, _json_bytes({"id": result[0], "bdf": result[1]}))
        simple = {
            "vm.boot": vmm.boot,
            "vm.shutdown": vmm.shutdown,
            "vm.reboot": vmm.reboot,
            "vm.pause": vmm.pause,
            "vm.resume": vmm.resume,
            "vm.delete": vmm.delete,
            "vm.power-button": vmm.power_button,
            "vm.nmi": vmm.nmi,
        }
        if name in simple:
            simple[name]()
            return _resp(204)
        if name == "vmm.shutdown":
            vmm.vmm_shutdown()
            self.shutdown_requested.set()
            return _resp(200)
        if name == "vm.remove-device":
            vmm.remove_device(str(body["id"]))
            return _resp(204)
        if name == "vm.resize":
            vmm.resize(
                body.get("desired_vcpus"), body.get("desired_ram"), body.get("desired_balloon")
            )
            return _resp(204)
        if name == "vm.resize-disk":
            vmm.resize_disk(str(body.get("id", "")), int(body.get("desired_size") or 0))
            return _resp(204)
        if name == "vm.resize-zone":
            vmm.resize_zone(str(body.get("id", "")), int(body.get("desired_ram") or 0))
            return _resp(204)
        if name == "vm.snapshot":
            vmm.snapshot(str(body["destination_url"]))
            return _resp(204)
        if name == "vm.restore":
            vmm.restore(str(body["source_url"]), resume=bool(body.get("resume", False)))
            return _resp(204)
        if name == "vm.send-migration":
            await self._send_migration(body)
            return _resp(204)
        if name == "vm.receive-migration":
            await self._receive_migration(body)
            return _resp(204)
        return _error(404, ["Not Found"])

    def _info_body(self) -> bytes:
        """vm.info's answer, made again only when the VMM changed since the last one."""
        version = self.vmm.version
        kept = self._info
        if kept is not None and kept[0] == version and not self._verify_info:
            return kept[1]
        body = _json_bytes(self.vmm.info())
        if kept is not None and kept[0] == version and body != kept[1]:
            raise AssertionError(
                f"fakechv: a kept vm.info answer is stale (a change did not move the "
                f"version): {kept[1]!r} is now {body!r}"
            )
        self._info = (version, body)
        return body

    async def _send_migration(self, body: dict[str, Any]) -> None:
        action = self.profile.migration_send_error
        url = str(body.get("destination_url", ""))
        if self.vmm.vm is None:
            raise ApiError(
                [
                    "Error from API",
                    action,
                    "Failed to send migratable component snapshot",
                    "VM is not running",
                ]
            )
        from fakechv import migration  # written alongside the server; imported late

        state = self.vmm.export_migration_state()
        if self.profile.migration_worker:
            # v53+: a worker sends; the request is answered 204 at once and the outcome
            # is only the migration-finished / migration-failed event (and, on success,
            # the VMM's exit). Requests that come meanwhile wait for the worker here;
            # real CHV answers them "VM is currently migrating" (or a snapshot for
            # vm.info) until it is done.
            self._migration_worker = asyncio.get_running_loop().create_task(
                self._send_in_worker(migration, url, state)
            )
            return
        error = await self._send(migration, url, state)
        if error is not None:
            raise ApiError(
                ["Error from API", action, "Failed to send migratable component snapshot", error]
            )

    async def _send_in_worker(self, migration: Any, url: str, state: dict[str, Any]) -> None:
        """The migration worker (``vmm/src/migration/worker.rs@v53.0:80-121``): holds
        the VM (the API lock) until the send is over."""
        async with self.lock:
            error = await self._send(migration, url, state)
            if error is not None:
                log.warning("migration failed: %s", error)

    async def _send(self, migration: Any, url: str, state: dict[str, Any]) -> str | None:
        """Send the VM with its events; on success the VM is gone and the VMM exits.
        Returns the failure, if any (the VM stays as it was)."""
        self.vmm.emit("vm", "migration-started")
        try:
            await migration.send_state(url, state)
        except migration.MigrationError as exc:
            self.vmm.emit("vm", "migration-failed")
            return str(exc)
        if self.profile.migration_worker:
            self.vmm.emit("vm", "migration-finished")
        self.vmm.finish_outgoing_migration()
        self.shutdown_requested.set()
        return None

    async def _receive_migration(self, body: dict[str, Any]) -> None:
        action = self.profile.migration_receive_error
        url = str(body.get("receiver_url", ""))
        if self.vmm.config is not None:
            raise ApiError(
                [
                    "Error from API",
                    action,
                    "Failed to receive migratable component snapshot",
                    "VM is already created",
                ]
            )
        from fakechv import migration

        self.vmm.emit("vm", "migration-receive-started")
        try:
            # import before acknowledging: a state this VMM cannot take is refused to
            # the sender, which then keeps its VM
            await migration.receive_state(url, validate=self.vmm.import_migration_state)
        except migration.MigrationError as exc:
            self.vmm.emit("vm", "migration-receive-failed")
            raise ApiError(
                [
                    "Error from API",
                    action,
                    "Failed to receive migratable component snapshot",
                    str(exc),
                ]
            ) from None
        self.vmm.emit("vm", "migration-receive-finished")

    # ------------------------------------------------------------ control surface

    async def _control(self, method: str, name: str, raw: bytes) -> ApiResponse:
        def bad(msg: str, status: int = 400) -> ApiResponse:
            return _resp(status, _json_bytes([msg]))

        data: Any = None
        if raw:
            try:
                data = from_slice(raw, AnyValue())
            except SerdeError as exc:
                return bad(f"fakechv control: body is not valid JSON: {exc}")
        if name == "faults":
            if method == "GET":
                return _resp(200, _json_bytes(self.faults.to_json()))
            if method == "DELETE":
                self.faults.clear()
                return _resp(204)
            if method == "PUT":
                items = (
                    data if isinstance(data, list) else [data] if isinstance(data, dict) else None
                )
                if items is None:
                    return bad("fakechv control: PUT faults takes a JSON list of rules")
                try:
                    rules = [FaultRule.from_json(item) for item in items]
                except ValueError as exc:
                    return bad(f"fakechv control: {exc}")
                for r in rules:
                    self.faults.add(r)
                return _resp(204)
        elif name == "eject":
            if method == "GET":
                return _resp(
                    200,
                    _json_bytes(
                        {
                            "mode": self.vmm.eject.mode,
                            "delay_ms": self.vmm.eject.delay_ms,
                            "pending": self.vmm.pending_ejects(),
                        }
                    ),
                )
            if method == "PUT":
                if not isinstance(data, dict):
                    return bad('fakechv control: PUT eject takes {"mode": ..., "delay_ms": N}')
                unknown = set(data) - {"mode", "delay_ms"}
                if unknown:
                    return bad(f"fakechv control: unknown eject field(s): {sorted(unknown)}")
                try:
                    self.vmm.eject = EjectPolicy(
                        data.get("mode", "immediate"), data.get("delay_ms", 0)
                    )
                except ValueError as exc:
                    return bad(f"fakechv control: {exc}")
                return _resp(204)
        elif name == "eject-now":
            if method == "PUT":
                if not isinstance(data, dict) or not isinstance(data.get("id"), str):
                    return bad('fakechv control: PUT eject-now takes {"id": "<device id>"}')
                async with self.lock:
                    done = self.vmm.eject_now(data["id"])
                if not done:
                    return bad(f"fakechv control: device {data['id']!r} is not awaiting eject", 404)
                return _resp(204)
        else:
            return bad(f"fakechv control: unknown endpoint {CONTROL_PREFIX}{name}", 404)
        return bad(f"fakechv control: method {method} not allowed on {CONTROL_PREFIX}{name}")
