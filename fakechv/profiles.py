"""Emulated Cloud Hypervisor releases ("profiles") and what differs between them.

Every rule that changed between v51.0, v52.0, v53.0 and upstream HEAD is a
field of :class:`Profile`; the rest of fakechv asks the profile instead of
comparing version strings.

Facts checked against the CHV source (tags v51.0, v52.0, v53.0, HEAD ae44c2971)
where ``/work/shared/reference/chv-pci-rules.md`` is wrong or silent:

* ``vm.nmi``: the v51.0 and v52.0 specs document ``/vmm.nmi`` but the source
  registers ``endpoint!("/vm.nmi")`` in every release (vmm/src/api/http/mod.rs
  @v51.0:292, @v52.0:298). fakechv answers ``vm.nmi`` (as CHV does) and 404 for
  ``vmm.nmi``; see :data:`SPEC_ROUTE_DEVIATIONS`.
* ``vm.coredump`` exists only with the ``guest_debug`` cargo feature, which is not
  in the default build (cloud-hypervisor/Cargo.toml@v53.0:47 ``default =
  ["io_uring", "kvm"]``); fakechv emulates the default build, so it answers 404.
  For the same reason ``vmm.ping`` reports ``features: ["io_uring", "kvm"]`` and
  the ``ivshmem`` config field (cfg(feature = "ivshmem")) is an unknown field.
* The "not valid" identifier message is ``Identifier X is not invalid`` (sic) in
  v51.0..v53.0 (vmm/src/config.rs@v53.0 ValidationError::InvalidIdentifier);
  only HEAD says ``is not valid``.
* A second ``vm.remove-device`` before eject succeeds in v51.0/v52.0 (their
  DeviceManager::remove_device does not check that the config entry still
  exists), fails in v53.0 with UnknownDeviceId (device_manager.rs@v53.0:5080)
  and is retryable again at HEAD.
* ``vmm.shutdown`` answers 200 with an empty body (http_endpoint.rs@v53.0,
  ``VmmShutdown``), not 204 as the spec says.
* The v52.0/v53.0 specs name the VmConfig key ``generic-vhost-user``; serde uses
  the field name ``generic_vhost_user`` (vm_config.rs@v53.0:1168). fakechv
  follows the source.
* ``payload`` is ``Option<PayloadConfig>`` (vm_config.rs@v53.0:1161): vm.create
  accepts a config without it, vm.boot fails with "Payload configuration is not
  bootable" / "No bootitem provided: neither firmware nor kernel". The spec
  marks it required.
* After ``vm.shutdown`` the VM object is dropped (lib.rs@v53.0 ``vm_shutdown``
  takes the VM out of ``self.vm``), so vm.info reports ``"state": "Created"`` and
  no device tree; the rules file lists "Shutdown" among the reported states.
* Every response but a 204 carries ``Content-Type`` and ``Content-Length``
  (``0`` without a body): micro_http's ``Response::new`` (Cargo.lock@v53.0:
  micro-http 5c2254d, src/response.rs) gives every status but 100 and 204 a
  length, and CHV sets the JSON content type on every answer. Seen on v53.0.
* micro_http 5c2254d (v52.0, v53.0) parses GET, PUT and PATCH only; DELETE is
  its own "Invalid HTTP Method" 400 there. 7975fe0 (HEAD) adds DELETE, which
  then reaches CHV's router. v51.0 pins 3248cee, with the same methods as
  5c2254d.
* ``--api-socket path=P``: v53.0 and HEAD hold an exclusive OFD lock on ``P.lock``
  while serving and replace a stale socket at ``P`` under it (api/http/mod.rs
  @v53.0:453 ``acquire_api_socket_lock``); another instance holding the lock makes
  start-up fail ("API socket ... is already in use by another running
  instance", exit 1). v52.0 binds ``P`` directly, so any file there makes it fail
  ("Error creation API server's socket"). fakechv also never replaces a socket
  at which something answers, and removes ``P`` on exit only if ``P`` is still
  the socket it bound (v52.0's main.rs removes ``P`` even after a failed start,
  which can take a live instance's socket away: not emulated).
* vm.create without a body, and any method other than GET/PUT on an action
  endpoint, answer 400 with an empty body (http_endpoint.rs ``VmCreate``,
  mod.rs ``EndpointHandler::handle_request``), not ``["Bad Request"]``.
* With ``num_pci_segments: 0`` (v52+) the first error is "Invalid PCI segment
  id: 0" from the rng's PCI common config, which ``VmConfig::validate`` checks
  before ``PlatformConfig::validate`` (config.rs@v53.0:3262 vs 3453).
* ``pci_segment`` is a plain ``u16`` with serde default 0, never ``null``; the
  device ``iommu`` flag is omitted when false from v52
  (``skip_serializing_if``, vm_config.rs@v52.0:280).
* v53 ``vm.send-migration`` only dispatches a worker thread and answers 204; a
  later failure is logged and the VM resumed, a success shuts the VM down and
  makes the VMM exit (lib.rs@v53.0:2019-2041). fakechv runs the transfer inside
  the request and answers 500 on failure (documented deviation).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "PROFILE_ENV",
    "SPEC_ROUTE_DEVIATIONS",
    "Profile",
    "Route",
    "get_profile",
    "profile_from_env",
]

PROFILE_ENV = "FAKECHV_PROFILE"
DEFAULT_PROFILE = "v53"


@dataclass(frozen=True)
class Route:
    """One CHV endpoint: its HTTP method and whether it takes a JSON body."""

    method: str
    body: bool


_BASE_ROUTES: dict[str, Route] = {
    "vmm.ping": Route("GET", False),
    "vmm.shutdown": Route("PUT", False),
    "vm.info": Route("GET", False),
    "vm.counters": Route("GET", False),
    "vm.create": Route("PUT", True),
    "vm.delete": Route("PUT", False),
    "vm.boot": Route("PUT", False),
    "vm.pause": Route("PUT", False),
    "vm.resume": Route("PUT", False),
    "vm.shutdown": Route("PUT", False),
    "vm.reboot": Route("PUT", False),
    "vm.power-button": Route("PUT", False),
    "vm.resize": Route("PUT", True),
    "vm.resize-disk": Route("PUT", True),
    "vm.resize-zone": Route("PUT", True),
    "vm.add-device": Route("PUT", True),
    "vm.remove-device": Route("PUT", True),
    "vm.add-disk": Route("PUT", True),
    "vm.add-fs": Route("PUT", True),
    "vm.add-pmem": Route("PUT", True),
    "vm.add-net": Route("PUT", True),
    "vm.add-vsock": Route("PUT", True),
    "vm.add-vdpa": Route("PUT", True),
    "vm.add-user-device": Route("PUT", True),
    "vm.snapshot": Route("PUT", True),
    "vm.nmi": Route("PUT", False),
    "vm.restore": Route("PUT", True),
    "vm.receive-migration": Route("PUT", True),
    "vm.send-migration": Route("PUT", True),
}

#: Where fakechv's route table knowingly differs from a release's spec, with
#: the reason: ``(profile, name) -> reason``; name is the spec's path name.
SPEC_ROUTE_DEVIATIONS: dict[tuple[str, str], str] = {
    **{
        (p, "vmm.nmi"): "spec says /vmm.nmi, source registers /vm.nmi (api/http/mod.rs)"
        for p in ("v51", "v52")
    },
    **{
        (p, "vm.coredump"): "only with the guest_debug feature, not in the default build"
        for p in ("v51", "v52", "v53", "head")
    },
}

_V52_IDS = frozenset(
    {
        "disk",
        "net",
        "fs",
        "generic_vhost_user",
        "pmem",
        "device",
        "user_device",
        "vdpa",
        "vsock",
        "rng",
        "console",
    }
)
_V53_IDS = _V52_IDS | {"balloon", "ivshmem", "rtc"}


@dataclass(frozen=True)
class Profile:
    """What one emulated CHV release does differently."""

    name: str
    version: str
    build_version: str
    #: device kinds (devices.DeviceKind.name) that accept ``pci_device_id``
    pci_device_id_kinds: frozenset[str]
    #: rng and console carry ``id``/``pci_segment``/``pci_device_id`` (v52+)
    rng_console_have_id: bool
    #: a host bridge occupies slot 0 of every segment (<= v53) or only of segment 0
    host_bridge_all_segments: bool
    #: ``pci_device_id`` 0 is rejected on every segment (v52/v53) or only segment 0
    reserved_id0_all_segments: bool
    #: the device's ``pci_segment`` is checked only when ``platform`` is set (v52)
    segment_check_needs_platform: bool
    #: an API error's status comes from ``api_error_status_code`` (v53+): 404 for a
    #: VM not created or without config, else 500 (vmm/src/api/http/mod.rs@v53.0:88);
    #: before, every API error is a 500
    error_status_codes: bool
    #: ``api_error_status_code`` also gives 404 to an unknown device or nothing to
    #: remove, 409 to a non-unique id or device path, 400 to any other validation
    #: error (HEAD, vmm/src/api/http/mod.rs@ae44c2971:92-106)
    device_error_status_codes: bool
    #: unset optional fields serialize as ``null`` (<= v52) or are omitted (v53+)
    null_unset: bool
    #: a second remove-device before the guest ejects succeeds (v51, v52, head)
    remove_retryable: bool
    has_generic_vhost_user: bool
    has_rtc: bool
    #: the word in "Identifier X is not <word>"
    invalid_identifier_word: str
    #: ``--version`` prints "Migration Protocol Versions: 0" (v53+)
    migration_protocol_line: bool
    #: vm.boot of a booted VM is "VM is already created" (v53+, VmOwnership);
    #: before, it calls ``Vm::boot`` again: a paused VM resumes, a running one
    #: fails with "invalid VM state transition: Running to Running"
    boot_refuses_existing_vm: bool = True
    #: the ``ApiError`` messages of vm.send-migration and vm.receive-migration:
    #: "Error dispatching the migration worker" / "Error receiving migration" (v53+,
    #: vmm/src/api/mod.rs@v53.0:204-208), "Error starting migration sender" /
    #: "... receiver" before (vmm/src/api/mod.rs@v52.0:199-203)
    migration_send_error: str = "Error dispatching the migration worker"
    migration_receive_error: str = "Error receiving migration"
    #: HTTP methods micro_http parses (its pinned revision); others are its own 400
    http_methods: frozenset[str] = frozenset({"GET", "PUT", "PATCH"})
    #: largest request body micro_http reads (``MAX_PAYLOAD_SIZE`` or CHV's override)
    http_max_payload: int = 51200
    #: the API socket path is guarded by ``P.lock`` and a stale socket replaced (v53+)
    api_socket_lock: bool = True
    features: tuple[str, ...] = ("io_uring", "kvm")
    #: a booted net's config gets the MAC of the tap CHV opened, ``host_mac`` (not head)
    reports_host_mac: bool = True
    #: a net without ``mac`` gets a random one at boot (head), not at vm.create
    net_mac_at_boot: bool = False
    #: "Failed to find device corresponding to the given identifier" names the id (v53+,
    #: vmm/src/device_manager.rs@v53.0:506; v52.0:476 has no ": {0}")
    unknown_device_names_id: bool = True
    #: vm.add-device refuses more than one fd with a 400 (v53+); v52 takes them
    add_device_refuses_fds: bool = True
    #: a snapshot file that cannot be opened is named in the error (v53+,
    #: vmm/src/migration/mod.rs@v53.0:60); v52 gives the OS error alone
    snapshot_error_context: bool = True
    #: what a vhost-user device says when its back end is not there: head waits for
    #: the socket and times out, the releases fail to connect at once
    vhost_user_missing: tuple[str, ...] = ()
    #: vm.send-migration hands the migration to a worker, which ends it with the
    #: ``migration-finished`` or ``migration-failed`` event (v53+,
    #: vmm/src/migration/worker.rs@v53.0:110-121); before, the request itself fails
    migration_worker: bool = True
    #: the release's Rust config types: a table of ``fakechv.configtypes.RELEASES``
    #: (a release whose types did not change names the table of the one before)
    config_types: str = ""
    #: the official API spec of the release, in the shared reference directory
    spec: str = ""
    routes: dict[str, Route] = field(default_factory=dict, compare=False, hash=False)

    def version_banner(self, verbose: bool = False) -> str:
        """The text ``cloud-hypervisor --version`` prints for this release."""
        lines = [f"cloud-hypervisor {self.build_version}"]
        if self.migration_protocol_line:
            lines.append("Migration Protocol Versions: 0")
        if verbose:
            feats = ", ".join(f'"{f}"' for f in self.features)
            lines.append(f"Enabled features: [{feats}]")
        return "\n".join(lines) + "\n"

    def accepts_pci_device_id(self, kind: str) -> bool:
        return kind in self.pci_device_id_kinds


def _routes(gvu: bool) -> dict[str, Route]:
    routes = dict(_BASE_ROUTES)
    if gvu:
        routes["vm.add-generic-vhost-user"] = Route("PUT", True)
    return routes


PROFILES: dict[str, Profile] = {
    "v51": Profile(
        name="v51",
        version="51.0.0",
        build_version="v51.0.0",
        pci_device_id_kinds=frozenset(),
        rng_console_have_id=False,
        host_bridge_all_segments=True,
        reserved_id0_all_segments=True,
        segment_check_needs_platform=False,
        error_status_codes=False,
        device_error_status_codes=False,
        null_unset=True,
        remove_retryable=True,
        has_generic_vhost_user=False,
        has_rtc=False,
        invalid_identifier_word="invalid",
        migration_protocol_line=False,
        migration_send_error="Error starting migration sender",
        migration_receive_error="Error starting migration receiver",
        boot_refuses_existing_vm=False,
        api_socket_lock=False,
        migration_worker=False,
        unknown_device_names_id=False,
        add_device_refuses_fds=False,
        snapshot_error_context=False,
        config_types="v51",
        spec="chv-openapi-v51.0.yaml",
        routes=_routes(False),
    ),
    "v52": Profile(
        name="v52",
        version="52.0.0",
        build_version="v52.0.0",
        pci_device_id_kinds=_V52_IDS,
        rng_console_have_id=True,
        host_bridge_all_segments=True,
        reserved_id0_all_segments=True,
        segment_check_needs_platform=True,
        error_status_codes=False,
        device_error_status_codes=False,
        null_unset=True,
        remove_retryable=True,
        has_generic_vhost_user=True,
        has_rtc=False,
        invalid_identifier_word="invalid",
        migration_protocol_line=False,
        migration_send_error="Error starting migration sender",
        migration_receive_error="Error starting migration receiver",
        boot_refuses_existing_vm=False,
        api_socket_lock=False,
        migration_worker=False,
        unknown_device_names_id=False,
        add_device_refuses_fds=False,
        snapshot_error_context=False,
        config_types="v52",
        spec="chv-openapi-v52.0.yaml",
        routes=_routes(True),
    ),
    "v53": Profile(
        name="v53",
        version="53.0.0",
        build_version="v53.0.0",
        pci_device_id_kinds=_V53_IDS,
        rng_console_have_id=True,
        host_bridge_all_segments=True,
        reserved_id0_all_segments=True,
        segment_check_needs_platform=False,
        error_status_codes=True,
        device_error_status_codes=False,
        null_unset=False,
        remove_retryable=False,
        has_generic_vhost_user=True,
        has_rtc=True,
        invalid_identifier_word="invalid",
        migration_protocol_line=True,
        config_types="v53",
        spec="chv-openapi-v53.0.yaml",
        routes=_routes(True),
    ),
    "head": Profile(
        name="head",
        version="54.0.0",
        build_version="v54.0.0",
        pci_device_id_kinds=_V53_IDS,
        rng_console_have_id=True,
        host_bridge_all_segments=False,
        reserved_id0_all_segments=False,
        segment_check_needs_platform=False,
        error_status_codes=True,
        device_error_status_codes=True,
        null_unset=False,
        remove_retryable=True,
        has_generic_vhost_user=True,
        has_rtc=True,
        invalid_identifier_word="valid",
        migration_protocol_line=True,
        http_methods=frozenset({"GET", "PUT", "PATCH", "DELETE"}),
        reports_host_mac=False,
        net_mac_at_boot=True,
        vhost_user_missing=("Timed out waiting for vhost-user connection",),
        http_max_payload=4 << 20,
        config_types="head",
        spec="chv-openapi-v53.0.yaml",
        routes=_routes(True),
    ),
}

#: The Cyberus Technology fork of CHV (cyberus-technology/cloud-hypervisor, PR #32): v52.0
#: with ``pci_device_id`` renamed ``bdf_device`` (the old name an alias), its only change
#: (:mod:`fakechv.configtypes_cyberus`); libvirt reads its banner as 52.0.
PROFILES["cyberus"] = dataclasses.replace(
    PROFILES["v52"],
    name="cyberus",
    build_version="v52.0.0-cyberus",
    config_types="cyberus",
)


def get_profile(name: str | None = None) -> Profile:
    """The profile called ``name`` ("v51", "v52", "v53", "head"; default v53)."""
    key = (name or DEFAULT_PROFILE).strip().lower()
    if key.startswith("v") and key.endswith(".0"):
        key = key[:-2]
    try:
        return PROFILES[key]
    except KeyError:
        known = ", ".join(PROFILES)
        raise ValueError(f"unknown fakechv profile {name!r} (known: {known})") from None


def profile_from_env() -> Profile:
    """The profile named by ``$FAKECHV_PROFILE`` (default v53)."""
    return get_profile(os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE)
