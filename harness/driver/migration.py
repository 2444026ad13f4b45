"""Live migration between two reference daemons (``virsh migrate --live --p2p``).

The live definition travels as the migration XML with a cookie of network aliases; the
destination starts a hypervisor in receive mode (:class:`Incoming`), the source sends,
and the destination ends with the source's live definition and CHV device tree. On any
failure the source keeps running unchanged and the destination has no domain, no state
file and no hypervisor left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from harness.chv.client import ChvError
from harness.driver.records import DomainRecord, DriverError, invalid
from harness.driver.statedir import Runtime
from harness.errors import HarnessError
from harness.model.domain import DeviceClass, Domain

if TYPE_CHECKING:
    from harness.driver.daemon import Driver

__all__ = ["Incoming", "migrate", "migration_cookie", "prepare_incoming"]


async def migrate(
    self: Driver,
    name: str,
    dest: Driver,
    *,
    live: bool = True,
    p2p: bool = True,
    persistent: bool = False,
    undefinesource: bool = False,
    transport: str = "unix",
) -> None:
    """``virsh migrate --live --p2p`` to another host (``dest``, another daemon).

    The live definition travels as the migration XML with a cookie of network
    aliases; the destination starts a hypervisor in receive mode, the source
    sends, and the destination ends with the source's live definition and CHV
    device tree. With ``persistent`` the destination defines the domain from the
    live definition; with ``undefinesource`` the source's persistent definition
    goes. On any failure the source keeps running unchanged and the destination
    has no domain, no state file and no hypervisor left.
    """
    rec = self._get(name)
    if dest is self or dest.state.root.resolve() == self.state.root.resolve():
        raise DriverError("Attempt to migrate guest to the same host")
    if not (live and p2p):
        raise DriverError("Operation not supported: the CH driver migrates only with --live --p2p")
    if rec.live is None or rec.client is None:
        raise DriverError(invalid(f"domain '{name}' is not running"))
    if name in self._migrating:
        raise DriverError(invalid(f"another migration job is already running for domain '{name}'"))
    if transport not in ("unix", "tcp"):
        raise DriverError(f"unknown migration transport {transport!r} (unix or tcp)")
    await self._reconcile(rec)
    if rec.runtime is not None and rec.runtime.pending:
        raise DriverError(
            invalid(
                f"domain '{name}' has a device removal in progress "
                f"({', '.join(rec.runtime.pending)}: the guest has not ejected it); "
                "migrate once it is done"
            )
        )
    self._migrating.add(name)
    try:
        xml = rec.live.to_xml()
        cookie = migration_cookie(rec.live)
        incoming = await prepare_incoming(dest, xml, cookie, transport)
        try:
            try:
                await rec.client.send_migration(incoming.url)
            except ChvError as exc:
                raise DriverError(f"migration of '{name}' failed: {exc}") from exc
            await incoming.finish(persistent=persistent)
        except BaseException:
            await incoming.abort()
            raise
        # the source VM is gone: CHV shut it down after the transfer
        await self._stop(rec)
        if undefinesource and name in self.domains:
            rec_after = self.domains[name]
            if rec_after.persistent is not None:
                self.state.remove_persistent(name)
                rec_after.persistent = None
            if rec_after.live is None:
                del self.domains[name]
    finally:
        self._migrating.discard(name)


async def prepare_incoming(
    self: Driver, xml: str, cookie: dict[str, object], transport: str
) -> Incoming:
    try:
        live = Domain.from_xml(xml, source="migration XML")
    except HarnessError as exc:
        raise DriverError(f"destination refused the migration XML: {exc}") from exc
    _check_cookie(live, cookie)
    rec = self.domains.get(live.name)
    if rec is not None and rec.live is not None:
        raise DriverError(invalid(f"domain '{live.name}' is already active on the destination"))
    if rec is not None and rec.persistent is not None and rec.persistent.uuid != live.uuid:
        raise DriverError(
            f"domain '{live.name}' already exists on the destination with uuid "
            f"{rec.persistent.uuid}"
        )
    if live.name in self._migrating:
        raise DriverError(invalid(f"domain '{live.name}' is already being migrated in"))
    created = rec is None
    if rec is None:
        rec = self.domains[live.name] = DomainRecord(live.name)
    self._migrating.add(live.name)
    incoming = Incoming(self, rec, live, created)
    try:
        client = await self._launch(rec)
        incoming.url = _migration_url(transport, self.state.run_dir / f"{live.name}.mig")
        _remove_migration_socket(incoming.url)  # CHV binds the path: nothing may be there
        incoming.task = asyncio.create_task(client.receive_migration(incoming.url))
        await incoming.wait_listening()
    except BaseException:
        await incoming.abort()
        raise
    return incoming


class Incoming:
    """The destination side of one migration, until it is finished or aborted."""

    def __init__(self, driver: Driver, rec: DomainRecord, live: Domain, created: bool) -> None:
        self.driver = driver
        self.rec = rec
        self.live = live
        self.created = created
        self.url = ""
        self.task: asyncio.Task[None] | None = None

    async def wait_listening(self, timeout: float = 10.0) -> None:
        """Wait until the receiver listens (its socket exists / its port answers)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.0  # a receiver in this process listens after a few turns of the loop
        while True:
            if self.task is not None and self.task.done():
                try:
                    self.task.result()
                except ChvError as exc:
                    raise DriverError(
                        f"the destination refused to receive the migration: {exc}"
                    ) from exc
                raise DriverError("the destination stopped receiving before the transfer")
            if await _listening(self.url):
                return
            if loop.time() > deadline:
                raise DriverError(f"the destination did not listen on {self.url}")
            await asyncio.sleep(delay)
            delay = min(0.002, delay * 2 or 0.000_25)

    async def finish(self, *, persistent: bool) -> None:
        assert self.task is not None
        try:
            await self.task
        except ChvError as exc:
            raise DriverError(f"the destination failed to receive the migration: {exc}") from exc
        drv, rec = self.driver, self.rec
        assert rec.hypervisor is not None
        rec.live = self.live
        rec.runtime = Runtime(rec.hypervisor.key, drv.profile, transient=rec.persistent is None)
        if persistent:
            pers = self.live.copy()
            drv.state.save_persistent(pers)
            rec.persistent = pers
            rec.runtime.transient = False
        drv.state.save_live(self.live, rec.runtime)
        drv._migrating.discard(rec.name)
        _remove_migration_socket(self.url)

    async def abort(self) -> None:
        drv, rec = self.driver, self.rec
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.task is not None:
            with contextlib.suppress(BaseException):
                await self.task
        # a receiving VMM answers nothing else until a sender comes: it is stopped
        # by signal, as libvirt stops a destination whose migration failed
        await drv._discard_hypervisor(rec, ask=False)
        rec.live = rec.runtime = None
        drv.state.remove_live(rec.name)
        if self.created:
            drv.domains.pop(rec.name, None)
        drv._migrating.discard(rec.name)
        _remove_migration_socket(self.url)


def _remove_migration_socket(url: str) -> None:
    """CHV leaves the receiver's Unix socket file behind after a migration and cannot
    bind a path where a file exists: the driver removes it, as it chose the path."""
    if url.startswith("unix:"):
        with contextlib.suppress(OSError):
            os.unlink(url[len("unix:") :])


#: ``__SO_ACCEPTCON`` in /proc/net/unix's Flags: the socket listens
_SO_ACCEPTCON = 0x10000


def _unix_listening(path: str) -> bool:
    """Whether a socket bound at ``path`` listens (from /proc/net/unix)."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return os.path.exists(path)
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == path and int(fields[3], 16) & _SO_ACCEPTCON:
            return True
    return False


def _migration_url(transport: str, near: Path) -> str:
    """Where the destination listens: loopback TCP, or a Unix socket beside its state
    (in a short temporary directory when that path is too long for AF_UNIX)."""
    if transport == "tcp":
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return f"tcp:127.0.0.1:{port}"
    path = str(near)
    if len(path.encode()) > 100:
        path = tempfile.mkdtemp(prefix="bdf-mig-") + "/migration.sock"
    return f"unix:{path}"


async def _listening(url: str) -> bool:
    """Whether a receiver listens on ``url``, without connecting to it (a receiver
    accepts exactly one connection: a probe would take the sender's place)."""
    if url.startswith("unix:"):
        return _unix_listening(url[len("unix:") :])
    port = int(url.rsplit(":", 1)[1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                return True
    return False


def _network_aliases(live: Domain) -> list[dict[str, object]]:
    nets = [d for d in live.devices() if d.cls is DeviceClass.INTERFACE]
    return [{"index": i, "alias": d.alias} for i, d in enumerate(nets)]


def migration_cookie(live: Domain) -> dict[str, object]:
    """libvirt's CH migration cookie (sent by the source): the network aliases."""
    return {"network-aliases": _network_aliases(live)}


def _check_cookie(live: Domain, cookie: dict[str, object]) -> None:
    """The destination's check of the cookie against the migration XML."""
    expected = _network_aliases(live)
    got = cookie.get("network-aliases")
    if not isinstance(got, list) or not isinstance(expected, list) or len(got) != len(expected):
        raise DriverError(
            "Number of network devices in migration cookie and migration XML does not match"
        )
    for want, have in zip(expected, got, strict=True):
        if want != have:
            raise DriverError(
                "Mismatch between migration cookie and migration XML for network alias "
                f"{have!r} (expected {want!r})"
            )
