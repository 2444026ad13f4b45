"""What the checks look at: one domain on one host, its definitions and CHV's view.

A target turns what it manages into :class:`DomainView` records; the checks and the
reports take these, never a driver or a daemon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.model.domain import Domain

__all__ = ["DomainView"]


@dataclass
class DomainView:
    """One domain on one host, as the runner checks it."""

    name: str
    state: str | None  # "running", "paused", "shut off"; None: no such domain
    live: Domain | None = None
    persistent: Domain | None = None
    chv_info: dict[str, Any] | None = None
    #: CHV's PCI devices: BDF -> CHV device id
    chv_bdfs: dict[str, str] = field(default_factory=dict)
    #: CHV device id -> (label, class) of the live device it belongs to
    chv_owners: dict[str, tuple[str, str]] = field(default_factory=dict)
