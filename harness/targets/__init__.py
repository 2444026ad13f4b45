"""Where scenarios run: the target protocol (:mod:`.base`), the reference driver on
fakechv (:mod:`.reference`), stock libvirt (:mod:`.libvirt`) and the reference driver on
real Cloud Hypervisor (:mod:`.chv`).

:data:`TARGETS` names them for ``bdf-harness run --target``; a target module is
imported only when its target is made.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.errors import HarnessError
from harness.targets.base import Target

__all__ = ["TARGETS", "make_target"]


def _reference() -> Target:
    from harness.targets.reference import ReferenceTarget

    return ReferenceTarget()


def _reference_process() -> Target:
    from harness.targets.reference import ReferenceTarget

    return ReferenceTarget(processes=True)


def _libvirt_target() -> Target:
    """Stock libvirt's CH driver: LibvirtUnavailable (with the reason) when its build, or
    what running it needs, is missing."""
    from harness.targets.libvirt import LibvirtTarget, LibvirtUnavailable, unavailable_reason

    target = LibvirtTarget()
    reason = unavailable_reason(target.prefix)
    if reason:
        raise LibvirtUnavailable(reason)
    return target


def _chv_target() -> Target:
    """The reference driver on real CHV (``$CHV_BINARY``, the guest of ``$CHV_GUEST_*``):
    NotRealChv (with the reason) when the binary, the guest or KVM is not usable."""
    from harness.targets.chv import ChvTarget

    return ChvTarget()


TARGETS: dict[str, Callable[[], Target]] = {
    "reference": _reference,
    "reference-process": _reference_process,
    "libvirt": _libvirt_target,
    "chv": _chv_target,
}


def make_target(name: str) -> Target:
    try:
        return TARGETS[name]()
    except KeyError:
        raise HarnessError(
            f"unknown target {name!r} (known: {', '.join(sorted(TARGETS))})"
        ) from None
