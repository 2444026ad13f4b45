"""The invariants of one of the driver's domains, right now (:func:`check_domain`)."""

from __future__ import annotations

from harness.checks.invariants import Violation, check_definitions
from harness.driver.daemon import Driver

__all__ = ["check_domain"]


async def check_domain(driver: Driver, name: str) -> list[Violation]:
    """Every state invariant of one domain of a driver, right now."""
    if name not in driver.domains:
        return []
    info = await driver.chv_info(name)  # settles finished removals first
    rec = driver.domains.get(name)
    if rec is None:
        return []
    return check_definitions(rec.persistent, rec.live, info, driver.caps)
