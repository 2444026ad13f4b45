"""The file descriptors a VMM was handed with ``vm.add-net`` / ``vm.add-device``.

A process that passes a tap's fds to CHV (libvirt does, over SCM_RIGHTS) sees the
tap busy for as long as CHV holds one of them, so when CHV closes them is part of
what a management stack observes. CHV's rules (v52/v53; the HTTP handler turns
the received files into raw fds in the device's config,
``vmm/src/api/http/http_endpoint.rs@v53.0:60-170``):

* **A request that fails** after its body parsed (validation, no VM, the device
  manager refusing the device): the raw fds are dropped with the config, never
  closed. They stay open until the process exits.
* **Created as a device** (at hot-add on a booted VM, or at the boot that creates
  the net): the virtio device holds dups of them (``Net::from_tap_fds`` dups,
  ``virtio-devices/src/net.rs@v53.0:701-726``) and the originals become the VM
  config's ``preserved_fds`` (``device_manager.rs@v53.0:3021``).
* **vm.remove-device** of a created net closes the originals at once
  (``device_manager.rs@v53.0:5025-5045``); the device's dups go when the device is
  dropped, at the guest's eject (or when the VM is shut down before it). So the tap
  is busy until the eject.
* **vm.shutdown**: the devices (their dups) are dropped; the originals stay in the
  config, so the tap stays busy while the VM is only created (a later boot uses
  them again).
* **vm.delete** (and a completed outgoing migration) drops the config: the
  preserved originals are closed (``impl Drop for VmConfig``,
  ``vmm/src/config.rs@v53.0:3854-3863``). Fds of a net that was never created as
  a device are not preserved and stay open until the process exits, as are those of
  a net removed from a VM that was not booted.
* **The process exits**: everything is closed.

fakechv holds the received fds themselves (no dups): a tap is busy exactly while
CHV would keep one of its fds open. The table is not part of the VMM's
checkpoint: it changes only when a request succeeds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

__all__ = ["HeldFds"]


def _close(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class HeldFds:
    """Which received fds a VMM keeps open, and until when (see the module doc)."""

    def __init__(self) -> None:
        #: by device id: fds of nets in the config
        self._by_device: dict[str, list[int]] = {}
        #: device ids whose fds became the config's preserved fds
        self._preserved: set[str] = set()
        #: by device id: fds of removed devices, closed at their eject
        self._awaiting_eject: dict[str, list[int]] = {}
        #: fds nothing will close before the process exits
        self._leaked: list[int] = []

    # ---------------------------------------------------------------- queries

    def open_fds(self) -> list[int]:
        """Every fd still held, in no particular order."""
        out = [fd for fds in self._by_device.values() for fd in fds]
        out += [fd for fds in self._awaiting_eject.values() for fd in fds]
        return out + list(self._leaked)

    def of(self, ident: str) -> tuple[int, ...]:
        """The fds held for the device ``ident`` in the config."""
        return tuple(self._by_device.get(ident, ()))

    # ---------------------------------------------------------------- events

    def adopt(self, ident: str | None, fds: Sequence[int], *, created: bool) -> None:
        """A request handing over ``fds`` for device ``ident`` succeeded; ``created``:
        the device was made now (hot-add on a booted VM)."""
        if not fds:
            return
        if ident is None:  # a config entry without id: nothing can find it again
            self._leaked.extend(fds)
            return
        self._by_device.setdefault(ident, []).extend(fds)
        if created:
            self._preserved.add(ident)

    def leak(self, fds: Sequence[int]) -> None:
        """A request handing over ``fds`` failed after they were attached."""
        self._leaked.extend(fds)

    def devices_created(self) -> None:
        """A boot (or restore) made the devices of every net in the config."""
        self._preserved.update(self._by_device)

    def removed(self, ident: str, *, booted: bool) -> None:
        """vm.remove-device of ``ident``: on a booted VM the device keeps its fds until
        its eject; on a VM that is only created they are forgotten (left open)."""
        fds = self._by_device.pop(ident, None)
        was_preserved = ident in self._preserved
        self._preserved.discard(ident)
        if not fds:
            return
        if booted and was_preserved:
            self._awaiting_eject.setdefault(ident, []).extend(fds)
        else:
            self._leaked.extend(fds)

    def ejected(self, ident: str) -> None:
        """The guest ejected ``ident``: the device is dropped, its fds closed."""
        _close(self._awaiting_eject.pop(ident, ()))

    def devices_dropped(self) -> None:
        """The VM's devices are gone (shutdown, reboot's old VM): removed devices that
        waited for their eject let their fds go."""
        for fds in self._awaiting_eject.values():
            _close(fds)
        self._awaiting_eject.clear()

    def config_dropped(self) -> None:
        """vm.delete: the config goes; its preserved fds are closed, the others of
        its nets are left open."""
        self.devices_dropped()
        for ident, fds in self._by_device.items():
            if ident in self._preserved:
                _close(fds)
            else:
                self._leaked.extend(fds)
        self._by_device.clear()
        self._preserved.clear()

    def close_all(self) -> None:
        """The process exits."""
        self.config_dropped()
        _close(self._leaked)
        self._leaked.clear()
