"""Exceptions of the reference libvirt-side model.

Every exception's ``str()`` is a complete human message that names the file,
device or value at fault, so a command-line front end can print it as is
(no traceback needed).
"""

from __future__ import annotations

__all__ = ["AddressError", "AllocationError", "DomainError", "HarnessError"]


class HarnessError(Exception):
    """Base class of every error the harness reports to a user."""


class AddressError(HarnessError):
    """A PCI address is malformed or not usable (libvirt's parse rules or CHV's rules)."""


class DomainError(HarnessError):
    """A domain or device XML document is malformed or inconsistent."""


class AllocationError(HarnessError):
    """A PCI slot cannot be reserved or allocated (duplicate use, bus full, ...)."""
