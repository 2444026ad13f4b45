"""The few sequences that wait for a booted guest (slow: a boot takes about 45 s here).

Until the guest's ACPI is up a ``vm.remove-device`` is never ejected on real CHV, so
every other sequence runs fakechv with ``--eject never``. These sequences wait for the
guest's ``CHV-GUEST-READY`` marker first and then remove devices for real: the guest
ejects them (2-10 s), the slot is freed and taken again, the guest's own events come
(``virtio-device`` ``activated`` and ``reset``), and a reboot renumbers. fakechv runs
them with ``--eject realistic`` (a guest that ejects 2.4-8 s after the request).
"""

from __future__ import annotations

from harness.differential.environment import token
from harness.differential.sequence import SLEEP, WAIT_EJECT, WAIT_GUEST, Sequence, Step, api

__all__ = ["FAKE_EJECT", "guest_sequences"]

#: fakechv's guest model for these sequences (the delay follows the device id: the same every run)
FAKE_EJECT = "realistic"


def _eject(device: str) -> Step:
    return Step(WAIT_EJECT, arg=device)


def guest_sequences() -> list[Sequence]:
    """The guest sequences (one: every step a real guest takes part in)."""
    config = {
        "payload": {"kernel": token("kernel"), "cmdline": token("cmdline")},
        "memory": {"size": 256 << 20},
        "serial": {"mode": "File", "file": token("new", "serial")},
        "console": {"mode": "Off"},
        "disks": [
            {"path": token("disk", "b0")},
            {"path": token("disk", "b1"), "id": "fixed6", "pci_device_id": 6},
        ],
        "net": [{}],
    }
    steps = [
        api("PUT", "vm.create", config),
        api("PUT", "vm.boot"),
        Step(WAIT_GUEST, arg=token("new", "serial")),
        api("GET", "vm.info"),
        api("PUT", "vm.add-disk", {"path": token("disk", "b2")}),
        api("PUT", "vm.add-disk", {"path": token("disk", "b3"), "id": "hot1", "pci_device_id": 10}),
        api("PUT", "vm.add-net", {"id": "hotnet"}),
        api("GET", "vm.info"),
        api("GET", "vm.counters"),
        api("PUT", "vm.remove-device", {"id": "hot1"}),
        api("GET", "vm.info"),
        api("PUT", "vm.remove-device", {"id": "hot1"}),
        api("PUT", "vm.add-disk", {"path": token("disk", "b4"), "id": "hot2", "pci_device_id": 10}),
        _eject("hot1"),
        api("GET", "vm.info"),
        api("PUT", "vm.add-disk", {"path": token("disk", "b5"), "id": "hot3", "pci_device_id": 10}),
        api("PUT", "vm.remove-device", {"id": "fixed6"}),
        _eject("fixed6"),
        api("PUT", "vm.remove-device", {"id": "hotnet"}),
        _eject("hotnet"),
        api("GET", "vm.info"),
        Step(SLEEP, arg="500"),
        api("PUT", "vm.reboot"),
        api("GET", "vm.info"),
        api("PUT", "vm.shutdown"),
        api("GET", "vm.info"),
        api("PUT", "vm.delete"),
    ]
    return [
        Sequence(
            name="guest: hot-add, remove, eject, re-add, reboot",
            source="guest",
            steps=tuple(steps),
            origin="chv-pci-rules.md sections 3, 5, 7 with a booted guest",
            sections=("3", "5", "6", "7"),
            guest=True,
        )
    ]
