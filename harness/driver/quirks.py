"""Driver quirks: named, deliberate deviations from the reference rules.

A quirk makes the reference driver behave as a driver under test does, so that the
suite can show which scenario catches it. Each one reproduces a behaviour of the
Cyberus Technology fork of libvirt's CH driver (cyberus-technology/libvirt, the
branch of its PR "Make libvirt assign BDFs to PCI devices that are in sync with
CHV"); the docstring of each override names the file and function it follows.
Quirks belong to the driver, not to a scenario: they are chosen for a whole run
(``bdf-harness run --quirks NAME,...``, ``$BDF_HARNESS_QUIRKS``, the property
machine's ``--quirks``), and the preset ``cyberus-libvirt`` turns on every one.

The reference code paths call the overrides below at a few named points; with no
quirk on, every override returns what the reference passes it, unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError

__all__ = [
    "ENV",
    "PRESETS",
    "QUIRKS",
    "Quirk",
    "QuirkError",
    "from_env",
    "parse_quirks",
]

#: the environment variable a run's worker processes read their quirks from
ENV = "BDF_HARNESS_QUIRKS"


class QuirkError(HarnessError):
    """An unknown quirk or preset name."""


@dataclass(frozen=True)
class Quirk:
    name: str
    #: what the driver does instead of the reference rule
    summary: str
    #: where the fork does it (cyberus-technology/libvirt)
    source: str


QUIRKS: dict[str, Quirk] = {
    q.name: q
    for q in (
        Quirk(
            "bdf-device-field",
            'sends the slot as "bdf_device" and never pci_segment or pci_device_id, '
            "whatever the CHV release",
            "src/ch/ch_monitor.c: virCHMonitorBuildDiskJson, virCHMonitorBuildNetJson "
            "and the rng object",
        ),
        Quirk(
            "hotplug-live-only",
            "a live hot-plug takes the lowest slot free in the live definition only: "
            "slots held by persistent-only devices and save images are not reserved",
            "src/ch/ch_pci_addr.c: chEnsurePciAddress",
        ),
        Quirk(
            "config-attach-persistent-only",
            "a --config attach looks at the persistent definition only: a slot a "
            "hot-plugged device holds in the live definition is given out again",
            "src/ch/ch_driver.c: the config branch of chDomainAttachDeviceFlags",
        ),
        Quirk(
            "live-config-copy-unchecked",
            "--live --config picks the slot from the live definition and copies it into "
            "the persistent one without checking it is free there",
            "src/ch/ch_driver.c: chDomainAttachDeviceFlags (live, then config copy)",
        ),
        Quirk(
            "detach-frees-early",
            "a detach drops the device and frees its slot right after vm.remove-device, "
            "without waiting for the guest's eject",
            "src/ch/ch_driver.c: chDomainDetachDeviceFlags",
        ),
        Quirk(
            "refused-nic-stays",
            "a NIC that CHV refused to hot-add stays in the live definition",
            "src/ch/ch_hotplug.c / ch_driver.c: the vm.add-net error path",
        ),
        Quirk(
            "only-virtio-addressed",
            "only rng, virtio NICs and virtio disks get an address; every other device "
            "is left for CHV to place",
            "src/ch/ch_pci_addr.c: chAssignPciAddresses",
        ),
    )
}

PRESETS: dict[str, tuple[str, ...]] = {"cyberus-libvirt": tuple(QUIRKS)}


def parse_quirks(text: str | Iterable[str] | None) -> frozenset[str]:
    """Quirk names from ``a,b`` or a list; presets expand. QuirkError names an unknown
    one and lists the known names."""
    if text is None:
        return frozenset()
    items = text.split(",") if isinstance(text, str) else list(text)
    out: set[str] = set()
    for raw in items:
        name = raw.strip()
        if not name:
            continue
        if name in PRESETS:
            out.update(PRESETS[name])
        elif name in QUIRKS:
            out.add(name)
        else:
            known = ", ".join([*QUIRKS, *PRESETS])
            raise QuirkError(f"unknown driver quirk {name!r} (known: {known})")
    return frozenset(out)


def from_env() -> frozenset[str]:
    """The quirks of this run (``$BDF_HARNESS_QUIRKS``)."""
    return parse_quirks(os.environ.get(ENV) or None)


# ----------------------------------------------------------------------------- overrides


def address_inputs(
    quirks: frozenset[str],
    *,
    affect_live: bool,
    affect_config: bool,
    live: Any,
    persistent: Any,
    saved: Sequence[Any],
) -> tuple[Any, Any, list[Any]]:
    """What the slot of an attached device is chosen from: ``(live, persistent,
    saved images)``. hotplug-live-only and live-config-copy-unchecked look at the live
    definition only; config-attach-persistent-only at the persistent one only."""
    if affect_live and not affect_config and "hotplug-live-only" in quirks:
        return live, None, []
    if affect_live and affect_config and "live-config-copy-unchecked" in quirks:
        return live, None, []
    if affect_config and not affect_live and "config-attach-persistent-only" in quirks:
        return None, persistent, list(saved)
    return live, persistent, list(saved)


def waits_for_eject(quirks: frozenset[str]) -> bool:
    """detach-frees-early: the detach does not wait for the guest."""
    return "detach-frees-early" not in quirks


def keeps_refused(quirks: frozenset[str], kind: str) -> bool:
    """refused-nic-stays: a NIC CHV refused is recorded in the live definition anyway."""
    return kind == "net" and "refused-nic-stays" in quirks


_VIRTIO_ONLY = ("disk", "net", "rng")


def addresses(quirks: frozenset[str], kind: str, element: Any) -> bool:
    """only-virtio-addressed: does the driver give a device of this kind an address."""
    if "only-virtio-addressed" not in quirks:
        return True
    if kind not in _VIRTIO_ONLY:
        return False
    if kind in ("disk", "net"):
        if kind == "disk":
            target = element.find("target")
            bus = target.get("bus") if target is not None else None
            return bus in (None, "virtio")
        model = element.find("model")
        return model is not None and model.get("type") == "virtio"
    return True


def drop_addresses(quirks: frozenset[str], domain: Any, kind_of: Any) -> None:
    """only-virtio-addressed at define: the devices the fork does not address lose the
    address the reference gave them."""
    if "only-virtio-addressed" not in quirks:
        return
    for device in domain.devices():
        try:
            kind = kind_of(device)
        except KeyError:
            continue
        if not addresses(quirks, kind, device.element):
            device.set_address(None)


def rewrite_body(quirks: frozenset[str], endpoint: str, body: object) -> object:
    """bdf-device-field: every device object carries ``bdf_device`` (its slot) instead
    of ``pci_segment`` and ``pci_device_id``."""
    if "bdf-device-field" not in quirks or not isinstance(body, dict):
        return body
    if endpoint == "vm.create":
        out = dict(body)
        for key, value in body.items():
            if isinstance(value, list):
                out[key] = [_bdf_device(v) for v in value]
            elif isinstance(value, dict) and key in ("rng", "vsock", "balloon"):
                out[key] = _bdf_device(value)
        return out
    if endpoint.startswith("vm.add-"):
        return _bdf_device(body)
    return body


def _bdf_device(device: object) -> object:
    if not isinstance(device, dict) or not ("pci_device_id" in device or "pci_segment" in device):
        return device
    out = {k: v for k, v in device.items() if k not in ("pci_segment", "pci_device_id")}
    if "pci_device_id" in device:
        out["bdf_device"] = device["pci_device_id"]
    return out
