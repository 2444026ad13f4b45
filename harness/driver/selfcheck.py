"""One of the driver's domains as the checks see it: its invariants right now
(:func:`check_domain`) and its :class:`~harness.checks.view.DomainView`
(:func:`domain_view`)."""

from __future__ import annotations

from typing import Any

from harness.checks.invariants import Violation, check_definitions
from harness.checks.view import DomainView
from harness.chv.info import chv_bdfs
from harness.chv.translate import chv_id
from harness.driver.daemon import Driver
from harness.errors import HarnessError

__all__ = ["check_domain", "domain_view"]


def domain_view(driver: Driver, name: str, info: dict[str, Any] | None) -> DomainView:
    """The view of the driver's domain ``name`` with CHV's ``vm.info`` ``info``
    (None when no hypervisor runs it): CHV's BDFs and which live device owns each."""
    rec = driver.domains.get(name)
    if rec is None:
        return DomainView(name, None)
    view = DomainView(name, rec.state, rec.live, rec.persistent, chv_info=info)
    if info is not None:
        view.chv_bdfs = {bdf: cid for cid, bdf in chv_bdfs(info).items()}
    if rec.live is not None:
        for device in rec.live.devices():
            try:
                cid = chv_id(device, driver.caps)
            except (KeyError, HarnessError):
                continue
            view.chv_owners[cid] = (device.label, device.cls.value)
    return view


async def check_domain(driver: Driver, name: str) -> list[Violation]:
    """Every state invariant of one domain of a driver, right now."""
    if name not in driver.domains:
        return []
    info = await driver.chv_info(name)  # settles finished removals first
    rec = driver.domains.get(name)
    if rec is None:
        return []
    return check_definitions(rec.persistent, rec.live, info, driver.caps)
