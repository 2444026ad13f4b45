"""Driver quirks: named, deliberate deviations from the reference rules.

A quirk makes the reference driver behave as a driver under test does, so that the
suite can show which scenario catches it. Each one reproduces a behaviour of the
Cyberus Technology fork of libvirt's CH driver (cyberus-technology/libvirt, the
branch of its PR "Make libvirt assign BDFs to PCI devices that are in sync with
CHV"); each quirk names the file and function it follows. Where the fork's stored
``ch_monitor.c`` and ``ch_process.c`` predate its PCI-address code, those two are read
from tpressure/libvirt, the closely related fork the same work was developed in.
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
            "src/ch/ch_monitor.c: virCHMonitorBuildDiskJson, virCHMonitorBuildNetJson, "
            "virCHMonitorBuildRngJson (the slot only, no CHV version check)",
        ),
        Quirk(
            "hotplug-live-only",
            "a live hot-plug takes the lowest slot free in the live definition only: "
            "slots held by persistent-only devices and save images are not reserved",
            "src/ch/ch_pci_addr.c: chEnsurePciAddress, from chDomainAttachDeviceLive "
            "(priv->pciAddrSet, seeded from the live definition at start)",
        ),
        Quirk(
            "config-attach-persistent-only",
            "a --config attach looks at the persistent definition only: a slot a "
            "hot-plugged device holds in the live definition is given out again",
            "src/ch/ch_driver.c: chDomainAttachDeviceConfig -> chDomainDefAssignAddresses "
            "-> chAssignPciAddresses(persistent copy, NULL)",
        ),
        Quirk(
            "live-config-copy-unchecked",
            "--live --config picks the slot from the live definition and copies it into "
            "the persistent one without checking it is free there",
            "src/ch/ch_driver.c: chSyncDeviceAddressLiveAndPersistent "
            "(chSync{Disk,Net}AddressesBetweenConfigs)",
        ),
        Quirk(
            "detach-frees-early",
            "a detach drops the device and frees its slot right after vm.remove-device, "
            "without waiting for the guest's eject",
            "src/ch/ch_driver.c: chDomainDetachDeviceLive (vm.remove-device, then "
            "chDomainReleaseDeviceAddress)",
        ),
        Quirk(
            "refused-nic-stays",
            "a NIC that CHV refused to hot-add stays in the live definition",
            "src/ch/ch_driver.c: chDomainAttachDeviceLive (virDomainNetInsert before "
            "chProcessAddNetworkDevice)",
        ),
        Quirk(
            "only-virtio-addressed",
            "only rng, virtio NICs and virtio disks get an address; every other device "
            "is left for CHV to place",
            "src/ch/ch_pci_addr.c: chInitPciDevices (from chAssignPciAddresses)",
        ),
        Quirk(
            "refused-disk-leaks-slot",
            "a disk CHV refused to hot-add keeps the slot it was given: no later hot-plug "
            "gets it until the domain stops",
            "src/ch/ch_driver.c: chDomainAttachDeviceLive (the vm.add-disk error path "
            "leaves the chEnsurePciAddress reservation)",
        ),
        Quirk(
            "transient-never-frees",
            "a live detach from a transient domain never frees the slot (the device is "
            "always found in the persistent copy, which is the live one)",
            "src/ch/ch_driver.c: chDomainDetachDeviceLiveAndConfig (free_addr), "
            "chDomainContainsDevice",
        ),
        Quirk(
            "restart-rebuild-from-live",
            "after a daemon restart the slot set is rebuilt from the live definition only: "
            "the slots kept for live-detached persistent devices are given out again",
            "src/ch/ch_monitor.c: virCHMonitorReattach -> chAssignPciAddresses(live, vm)",
        ),
        Quirk(
            "net-id-count",
            "NIC ids (and aliases) are net_<index> at boot and net_<NICs after the attach - "
            "1> at hot-plug, so a NIC attached after a detach can repeat an id in use",
            "src/ch/ch_monitor.c: virCHMonitorBuildNetJson; src/ch/ch_process.c: "
            "chProcessAddNetworkDevice(s)",
        ),
        Quirk(
            "nic-match-by-ifname",
            "a live detach finds the NIC by its target dev: without one (or with a vnet*, "
            "macvtap*, macvlan* name the live NIC does not keep) the detach fails",
            "src/ch/ch_driver.c: chDomainDetachPrepNet, chFindNet (STREQ on ifname)",
        ),
        Quirk(
            "define-queue-overrun",
            "a definition with more than 10 devices without an address is refused (the "
            "fork overflows its 10-entry queue on the heap: the daemon's behaviour is "
            "undefined from there)",
            "src/ch/ch_pci_addr.c: new_addr_queue, add_info_to_queue (g_realloc of 20 bytes)",
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
    state: ForkState | None = None,
    name: str = "",
) -> tuple[Any, Any, list[Any]]:
    """What the slot of an attached device is chosen from: ``(live, persistent,
    saved images)``. hotplug-live-only and live-config-copy-unchecked look at the live
    definition only, as does a live attach after a daemon restart with
    restart-rebuild-from-live; config-attach-persistent-only at the persistent one only.
    Slots the fork leaked (``state``) count as taken for a live attach."""
    leaked = state.phantom(name) if state is not None and affect_live else []
    if affect_live and not affect_config and "hotplug-live-only" in quirks:
        return live, None, leaked
    if affect_live and affect_config and "live-config-copy-unchecked" in quirks:
        return live, None, leaked
    if affect_config and not affect_live and "config-attach-persistent-only" in quirks:
        return None, persistent, list(saved)
    if (
        affect_live
        and "restart-rebuild-from-live" in quirks
        and state is not None
        and name in state.reattached
    ):
        return live, None, leaked
    return live, persistent, [*saved, *leaked]


class ForkState:
    """What the fork keeps in memory (its ``pciAddrSet``) beyond the definitions: the
    slots it leaked, and the domains it reattached at its start. Like the fork's private
    data it is lost with the daemon and freed when a domain stops."""

    def __init__(self) -> None:
        self.leaked: dict[str, set[tuple[int, int]]] = {}
        self.reattached: set[str] = set()

    def leak(self, name: str, address: Any) -> None:
        if address is not None:
            self.leaked.setdefault(name, set()).add((address.domain, address.slot))

    def forget(self, name: str) -> None:
        """The domain stopped: its slot set is freed."""
        self.leaked.pop(name, None)
        self.reattached.discard(name)

    def phantom(self, name: str) -> list[Any]:
        """The leaked slots as a definition whose devices hold them."""
        slots = sorted(self.leaked.get(name, ()))
        if not slots:
            return []
        from harness.model.domain import Domain

        disks = "".join(
            f"<disk type='file'><target dev='leaked{seg}x{slot}' bus='virtio'/>"
            f"<address type='pci' domain='{seg:#06x}' bus='0x00' slot='{slot:#04x}' "
            "function='0x0'/></disk>"
            for seg, slot in slots
        )
        xml = (
            f"<domain type='kvm'><name>slots-leaked-by-{name}</name>"
            f"<devices>{disks}</devices></domain>"
        )
        return [Domain.from_xml(xml, source="the fork's leaked slots")]


def on_refused(quirks: frozenset[str], state: ForkState, name: str, kind: str, addr: Any) -> None:
    """refused-disk-leaks-slot: the refused disk's slot stays taken."""
    if kind == "disk" and "refused-disk-leaks-slot" in quirks:
        state.leak(name, addr)


def on_live_detach(
    quirks: frozenset[str], state: ForkState, name: str, addr: Any, *, transient: bool
) -> None:
    """transient-never-frees: the detached device's slot stays taken."""
    if transient and "transient-never-frees" in quirks:
        state.leak(name, addr)


def boot_net_ids(quirks: frozenset[str], domain: Any) -> None:
    """net-id-count at boot: the NICs are net_0, net_1, ... in definition order."""
    if "net-id-count" not in quirks:
        return
    nics = [d for d in domain.devices() if d.cls.value == "interface"]
    for index, nic in enumerate(nics):
        nic.set_alias(f"net_{index}")


def hotplug_net_id(quirks: frozenset[str], device: Any, live: Any) -> None:
    """net-id-count at hot-plug: net_<number of NICs once this one is in - 1>."""
    if "net-id-count" not in quirks or device.cls.value != "interface":
        return
    count = sum(1 for d in live.devices() if d.cls.value == "interface")
    device.set_alias(f"net_{count}")


_CLEARED_NAMES = ("vnet", "macvtap", "macvlan")


def find_live_nic(quirks: frozenset[str], live: Any, spec: Any) -> tuple[bool, Any, str]:
    """nic-match-by-ifname: ``(applies, device, error)``; ``applies`` False when the
    reference's own matching stands."""
    if "nic-match-by-ifname" not in quirks or spec.cls.value != "interface":
        return False, None, ""
    name = spec.target_dev
    if not name:
        return True, None, "no interface name specified"
    for nic in live.devices():
        dev = nic.target_dev
        if nic.cls.value == "interface" and dev == name and not dev.startswith(_CLEARED_NAMES):
            return True, nic, ""
    return True, None, f"net {name} not found"


#: the fork's queue of devices waiting for a slot (new_addr_queue)
QUEUE_SIZE = 10


def check_queue(quirks: frozenset[str], domain: Any, can_address: Any) -> str:
    """define-queue-overrun: the error for a definition that overruns the queue, or "".
    The fork queues the devices it addresses that have no address yet."""
    if "define-queue-overrun" not in quirks:
        return ""
    queued = [d for d in domain.devices() if d.address is None and can_address(d)]
    if len(queued) <= QUEUE_SIZE:
        return ""
    return (
        f"{len(queued)} devices without a PCI address overrun the driver's queue of "
        f"{QUEUE_SIZE} (add_info_to_queue writes past a 20-byte buffer): the daemon's "
        "heap is corrupt"
    )


def waits_for_eject(quirks: frozenset[str]) -> bool:
    """detach-frees-early: the detach does not wait for the guest."""
    return "detach-frees-early" not in quirks


def keeps_refused(quirks: frozenset[str], kind: str) -> bool:
    """refused-nic-stays: a NIC CHV refused is recorded in the live definition anyway."""
    return kind == "net" and "refused-nic-stays" in quirks


def addresses(quirks: frozenset[str], kind: str, element: Any) -> bool:
    """only-virtio-addressed: does the driver give a device of this kind an address."""
    if "only-virtio-addressed" not in quirks:
        return True
    if kind == "disk":
        target = element.find("target")
        return target is None or target.get("bus") in (None, "virtio")
    if kind == "net":
        model = element.find("model")
        return model is not None and model.get("type") == "virtio"
    return kind == "rng"


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
