"""What the libvirt side knows about CHV: the device kinds of its API and what each
release accepts.

A real driver carries this knowledge itself rather than asking the hypervisor, so the
harness keeps its own table and does not import fakechv's. It spells CHV's keys the
way fakechv does (``fakechv.devices.DeviceKind.name``, ``fakechv.profiles.Profile``),
and ``tests/harness/test_capabilities.py`` checks that the two agree.

Adding a CHV release: a :class:`~fakechv.profiles.Profile` row in
``fakechv/profiles.py`` and one :data:`CAPABILITIES` row here
(``docs/how-to-add-a-chv-release.md``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.model.domain import CHV_CONFIG_KEYS

__all__ = [
    "CAPABILITIES",
    "HOTPLUG_KINDS",
    "KINDS",
    "KIND_OF_CONFIG_KEY",
    "ChvCapabilities",
    "ChvKind",
    "UnknownRelease",
    "capabilities",
    "profile_for_version",
]


class UnknownRelease(HarnessError):
    """A CHV profile this table has no row for."""


@dataclass(frozen=True)
class ChvKind:
    """One kind of CHV device as the driver talks about it."""

    #: CHV's name for the kind (fakechv's ``DeviceKind.name``): ``disk``, ``net`` ...
    name: str
    #: its key in ``VmConfig`` (``disks``)
    config_key: str
    #: how ``vm.create`` takes it: a ``list`` of entries, one ``object``, a ``flag``
    #: (``true``), or ``""`` when the driver cannot create it
    create_as: str = ""
    #: the ``vm.add-*`` endpoint, if CHV hot-plugs it
    add_endpoint: str | None = None
    #: the id CHV gives the kind's one device when it carries no id of its own
    fixed_id: str | None = None


KINDS: dict[str, ChvKind] = {
    k.name: k
    for k in (
        ChvKind("disk", "disks", "list", "vm.add-disk"),
        ChvKind("net", "net", "list", "vm.add-net"),
        ChvKind("rng", "rng", "object", fixed_id="__rng"),
        ChvKind("fs", "fs", "list", "vm.add-fs"),
        ChvKind("pmem", "pmem", "list", "vm.add-pmem"),
        ChvKind("vsock", "vsock", "object", "vm.add-vsock"),
        ChvKind("vdpa", "vdpa", "list", "vm.add-vdpa"),
        ChvKind("device", "devices", "list", "vm.add-device"),
        ChvKind("user_device", "user_devices", add_endpoint="vm.add-user-device"),
        ChvKind(
            "generic_vhost_user", "generic_vhost_user", add_endpoint="vm.add-generic-vhost-user"
        ),
        ChvKind("console", "console", "object", fixed_id="__console"),
        ChvKind("balloon", "balloon", "object", fixed_id="__balloon"),
        ChvKind("watchdog", "watchdog", "flag", fixed_id="__watchdog"),
        ChvKind("pvpanic", "pvpanic", "flag", fixed_id="__pvpanic"),
        ChvKind("ivshmem", "ivshmem", fixed_id="__ivshmem"),
    )
}

#: ``VmConfig`` key -> kind name
KIND_OF_CONFIG_KEY: dict[str, str] = {k.config_key: k.name for k in KINDS.values()}


def _hotplug_kinds() -> frozenset[str]:
    """Kinds CHV hot-plugs that a libvirt device class maps to."""
    return frozenset(
        KIND_OF_CONFIG_KEY[key]
        for key in CHV_CONFIG_KEYS.values()
        if KINDS[KIND_OF_CONFIG_KEY[key]].add_endpoint is not None
    )


#: CHV kinds the driver can hot-plug with ``vm.add-*``
HOTPLUG_KINDS = _hotplug_kinds()


@dataclass(frozen=True)
class ChvCapabilities:
    """What one CHV release accepts, as the libvirt side must know it."""

    profile: str
    #: kinds (:data:`KINDS` names) whose config takes ``pci_device_id``
    device_id_kinds: frozenset[str]
    #: whether rng and console carry ``id``/``pci_segment`` at all
    rng_console_ids: bool
    #: slot 0 of every segment is the host bridge (<= v53), else of segment 0 only (HEAD)
    host_bridge_all_segments: bool = True

    def can_address(self, kind: str) -> bool:
        return kind in self.device_id_kinds


_V52 = frozenset(
    {"disk", "net", "fs", "generic_vhost_user", "pmem", "device", "user_device", "vdpa"}
    | {"vsock", "rng", "console"}
)
_V53 = _V52 | {"balloon", "ivshmem", "rtc"}

#: one row per CHV release (fakechv profile name)
CAPABILITIES: dict[str, ChvCapabilities] = {
    "v51": ChvCapabilities("v51", frozenset(), False),
    "v52": ChvCapabilities("v52", _V52, True),
    "v53": ChvCapabilities("v53", _V53, True),
    "head": ChvCapabilities("head", _V53, True, host_bridge_all_segments=False),
    # the Cyberus fork: v52's kinds; it reads pci_device_id as an alias of its bdf_device
    "cyberus": ChvCapabilities("cyberus", _V52, True),
}


def capabilities(profile: str) -> ChvCapabilities:
    """The row of ``profile``; :class:`UnknownRelease` naming the known ones if none."""
    try:
        return CAPABILITIES[profile]
    except KeyError:
        known = ", ".join(CAPABILITIES)
        raise UnknownRelease(f"unknown CHV profile {profile!r} (known: {known})") from None


_BANNER = re.compile(r"^cloud-hypervisor v(\d+)\.(\d+)(?:\.(\d+))?(\S*)", re.MULTILINE)


def profile_for_version(banner: str) -> str:
    """The capability row of a ``--version`` banner: the release (``v52`` for v52.0.0 or
    a v52 patch release), or ``head`` for a build past the latest release
    (``v53.0-246-g...``, or main's next Cargo version ``v54.0.0``); UnknownRelease if the
    release has no row or the banner is unreadable."""
    match = _BANNER.search(banner)
    if match is None:
        raise UnknownRelease(f"not a cloud-hypervisor --version banner: {banner.strip()[:80]!r}")
    major = int(match.group(1))
    past_tag = bool(re.match(r"-\d+-g[0-9a-f]+", match.group(4) or ""))
    releases = [int(name[1:]) for name in CAPABILITIES if re.fullmatch(r"v\d+", name)]
    latest = max(releases, default=0)
    if (major > latest or (major == latest and past_tag)) and "head" in CAPABILITIES:
        return "head"  # main past the last release (its Cargo version may be the next one)
    if major in releases:
        return f"v{major}"  # the release, a patch release, or a build past an older tag
    raise UnknownRelease(f"{banner.strip()}: no capability row for this release")
