"""``virsh save``, ``managedsave`` and ``restore`` for the reference driver
(:class:`harness.driver.daemon.Driver` delegates to these; ``self`` is the driver)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from harness.chv.client import ChvError
from harness.driver.records import DomainRecord, DriverError
from harness.driver.statedir import Runtime
from harness.errors import HarnessError
from harness.model.domain import Domain

if TYPE_CHECKING:
    from harness.driver.daemon import Driver

SAVE_XML = "libvirt-save.xml"
SAVE_PENDING = "libvirt-pending-removals.json"


async def save(self: Driver, name: str, path: Path) -> None:
    """``virsh save``: snapshot the running domain into ``path`` and stop it."""
    rec = self._get(name)
    client = self.client(name)
    path = Path(path)
    if path.exists():
        raise DriverError(f"save image {path} already exists")
    path.mkdir(parents=True)
    try:
        if rec.state != "paused":
            await client.pause()
        await client.snapshot(path.resolve().as_uri())
    except ChvError as exc:
        shutil.rmtree(path, ignore_errors=True)
        if rec.state != "paused":
            try:
                await client.resume()
            except ChvError:
                pass
        raise DriverError(f"failed to save '{name}': {exc}") from exc
    assert rec.live is not None and rec.runtime is not None
    rec.live.save(path / SAVE_XML)
    # removals CHV was asked for but the guest has not finished travel with the image
    (path / SAVE_PENDING).write_text(json.dumps(rec.runtime.pending), encoding="utf-8")
    images = self.state.save_images(name)
    self.state.set_save_images(name, [*images, path.resolve()])
    await self._stop(rec)


async def managedsave(self: Driver, name: str) -> None:
    await save(self, name, self.state.managed_save_path(name))


async def restore(self: Driver, path: Path) -> str:
    """``virsh restore``: start a domain from a save image."""
    path = Path(path)
    xml_path = path / SAVE_XML
    if not xml_path.exists():
        raise DriverError(f"{path} is not a save image: {SAVE_XML} is missing")
    try:
        live = Domain.load(xml_path)
    except HarnessError as exc:
        raise DriverError(f"{xml_path}: {exc}") from exc
    rec = self.domains.get(live.name)
    if rec is not None and rec.live is not None:
        raise DriverError(
            f"Requested operation is not valid: domain '{live.name}' is already active"
        )
    created = rec is None
    if rec is None:
        rec = self.domains[live.name] = DomainRecord(live.name)
    try:
        await restore_from(self, path, rec)
    except BaseException:
        if created:
            del self.domains[live.name]
        raise
    return live.name


async def restore_from(self: Driver, path: Path, rec: DomainRecord) -> None:
    live = Domain.load(path / SAVE_XML)
    client = await self._launch(rec)
    try:
        await client.restore(path.resolve().as_uri())
        await client.resume()
    except ChvError as exc:
        await self._discard_hypervisor(rec)
        raise DriverError(f"failed to restore '{rec.name}' from {path}: {exc}") from exc
    assert rec.hypervisor is not None
    rec.live = live
    rec.runtime = Runtime(rec.hypervisor.key, self.profile, transient=rec.persistent is None)
    pending = path / SAVE_PENDING
    if pending.exists():
        rec.runtime.pending = [str(a) for a in json.loads(pending.read_text("utf-8"))]
    self.state.save_live(live, rec.runtime)
    await self._reconcile(rec)
    # a save image stays restorable after a restore (virsh restore FILE works again),
    # so it keeps counting for allocations while its file exists
