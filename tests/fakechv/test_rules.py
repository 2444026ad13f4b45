"""fakechv against chv-pci-rules.md sections 1-8, per emulated release.

Every test drives fakechv through its HTTP API (``Api.handle``) and checks each
exchange against the release's official spec (``harness.chv.spec.check_exchange``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fakechv import control
from fakechv.api import Api
from fakechv.profiles import PROFILES, SPEC_ROUTE_DEVIATIONS, get_profile
from fakechv.vmm import EjectPolicy, Vmm
from fakechv.wire import ApiRequest
from harness.chv.spec import PROFILE_SPECS, load_spec, reference_dir

ALL = ["v51", "v52", "v53", "head"]
WITH_IDS = ["v52", "v53", "head"]
KERNEL = {"kernel": "/boot/vmlinux"}


class Chv:
    """A fakechv server on a real Unix socket (the ``fakechv_server`` fixture),
    with helpers; every exchange is checked against the release's spec."""

    def __init__(self, handle: Any, profile: str) -> None:
        self.handle = handle
        self.profile = profile
        self.vmm: Vmm = handle.vmm
        self.api: Api = handle.api
        self.events: list[dict[str, Any]] = handle.events

    def request(
        self,
        method: str,
        name: str,
        json: Any = None,
        raw: bytes | None = None,
        fds: tuple[int, ...] = (),
        check: bool = True,
    ) -> Any:
        return self.handle.request(method, name, json=json, raw=raw, fds=fds, check=check)

    def put(self, name: str, body: Any = None) -> Any:
        return self.request("PUT", name, json=body)

    def send(self, request: ApiRequest) -> Any:
        return self.handle.send(request)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's event loop (the VMM is not thread-safe)."""

        async def run() -> Any:
            return fn()

        return self.handle.call(run())

    def info(self) -> dict[str, Any]:
        r = self.request("GET", "vm.info")
        assert r.status == 200, r.body
        return dict(r.json)

    def bdfs(self) -> dict[str, str]:
        """device id -> BDF for every PCI device (virtio: the child id)."""
        tree = self.info()["device_tree"]
        out = {}
        for node_id, node in tree.items():
            if node.get("pci_bdf"):
                children = node.get("children") or []
                out[children[0] if children else node_id] = node["pci_bdf"]
        return out


@pytest.fixture
def chv(fakechv_server: Any) -> Callable[..., Chv]:
    def make(profile: str = "v53", eject: str = "immediate") -> Chv:
        return Chv(fakechv_server(profile, eject=EjectPolicy(eject)), profile)

    return make


def boot(c: Chv, **config: Any) -> None:
    cfg = {"payload": KERNEL, **config}
    r = c.put("vm.create", cfg)
    assert r.status == 204, r.body
    r = c.put("vm.boot")
    assert r.status == 204, r.body


def error_status(profile: str, kind: str) -> int:
    """What the rules file says each release answers for each error kind."""
    if profile in ("v51", "v52"):
        return 500
    if kind == "not_created":
        return 404
    if profile == "head":
        return {"unknown_device": 404, "validation": 400, "not_unique": 409}.get(kind, 500)
    return 500


# ---------------------------------------------------------------- section 2: boot order


@pytest.mark.parametrize("profile", ALL)
def test_worked_example_console_two_disks_rng_then_add_net(chv: Any, profile: str) -> None:
    c = chv(profile)
    boot(c, console={"mode": "Tty"}, disks=[{"path": "/a.img"}, {"path": "/b.img"}])
    assert c.bdfs() == {
        "__console": "0000:00:01.0",
        "_disk0": "0000:00:02.0",
        "_disk1": "0000:00:03.0",
        "__rng": "0000:00:04.0",
    }
    r = c.put("vm.add-net", {"tap": "tap0"})
    assert (r.status, r.json) == (200, {"id": "_net2", "bdf": "0000:00:05.0"})


def test_boot_order_of_every_virtio_kind(chv: Any) -> None:
    c = chv("v53")
    boot(
        c,
        memory={"size": 1 << 30, "shared": True},
        disks=[{"path": "/d"}],
        net=[{"tap": "t"}],
        generic_vhost_user=[{"socket": "/s", "device_type": 26, "queue_sizes": [128]}],
        fs=[{"tag": "x", "socket": "/fs", "num_queues": 1, "queue_size": 128}],
        pmem=[{"file": "/p"}],
        vsock={"cid": 3, "socket": "/v"},
        balloon={"size": 0},
        watchdog=True,
        vdpa=[{"path": "/dev/vhost-vdpa-0", "num_queues": 1}],
        rtc={},
        devices=[{"path": "/sys/bus/pci/devices/0000:01:00.0"}],
        user_devices=[{"socket": "/u"}],
        iommu=True,
        pvpanic=True,
    )
    order = sorted(c.bdfs().items(), key=lambda kv: kv[1])
    assert [k for k, _ in order] == [
        "__console",
        "_disk0",
        "_net1",
        "__rng",
        "_generic_vhost_user2",
        "_fs3",
        "_pmem4",
        "_vsock5",
        "__balloon",
        "__watchdog",
        "_vdpa6",
        "__rtc",
        "_vfio7",
        "_vfio_user8",
        "__iommu",
        "__pvpanic",
    ]
    assert [b for _, b in order] == [f"0000:00:{i:02x}.0" for i in range(1, 17)]


def test_console_off_takes_no_slot_but_rng_always_does(chv: Any) -> None:
    c = chv("v53")
    boot(c, console={"mode": "Off"})
    assert c.bdfs() == {"__rng": "0000:00:01.0"}


def test_console_is_created_when_left_out(chv: Any) -> None:
    c = chv("v53")
    boot(c)
    assert c.bdfs() == {"__console": "0000:00:01.0", "__rng": "0000:00:02.0"}
    assert c.info()["config"]["rng"]["src"] == "/dev/urandom"


@pytest.mark.parametrize(("profile", "has_rtc"), [("v52", False), ("v53", True), ("head", True)])
def test_rtc_exists_from_v53(chv: Any, profile: str, has_rtc: bool) -> None:
    c = chv(profile)
    boot(c, console={"mode": "Off"}, rtc={})
    assert ("__rtc" in c.bdfs()) is has_rtc


# ---------------------------------------------------------------- section 1: segments


@pytest.mark.parametrize(("profile", "expect"), [("v53", "0001:00:01.0"), ("head", "0001:00:00.0")])
def test_host_bridge_on_every_segment_until_v53(chv: Any, profile: str, expect: str) -> None:
    c = chv(profile)
    boot(c, console={"mode": "Off"}, platform={"num_pci_segments": 2})
    r = c.put("vm.add-disk", {"path": "/x", "pci_segment": 1})
    assert r.json == {"id": "_disk0", "bdf": expect}


@pytest.mark.parametrize(("profile", "n"), [("v51", 0), ("v53", 97)])
def test_segment_count_limits(chv: Any, profile: str, n: int) -> None:
    # (from v52, n=0 is caught earlier: rng's segment 0 is then not < 0)
    c = chv(profile)
    assert (
        c.put("vm.create", {"payload": KERNEL, "platform": {"num_pci_segments": n}}).status == 204
    )
    r = c.put("vm.boot")
    assert r.status == 500
    assert r.json == [
        "Error from API",
        "The VM could not boot",
        "Failed to validate config",
        f"Number of PCI segments ({n}) not in range of 1 to 96",
    ]


@pytest.mark.parametrize("profile", ["v53", "head"])
def test_segment_out_of_range_rejected_by_add(chv: Any, profile: str) -> None:
    c = chv(profile)
    boot(c)
    before = c.request("GET", "vm.info").body
    r = c.put("vm.add-disk", {"path": "/x", "pci_segment": 1})
    assert r.status == error_status(profile, "validation")
    assert r.json == [
        "Error from API",
        "The disk could not be added to the VM",
        "Failed to validate config",
        "Invalid PCI segment id: 1",
    ]
    assert c.request("GET", "vm.info").body == before


def test_v52_checks_segment_only_with_platform(chv: Any) -> None:
    c = chv("v52")
    c.put("vm.create", {"payload": KERNEL})
    assert c.put("vm.add-disk", {"path": "/x", "pci_segment": 3}).status == 204
    c2 = chv("v52")
    c2.put("vm.create", {"payload": KERNEL, "platform": {"num_pci_segments": 1}})
    r = c2.put("vm.add-disk", {"path": "/x", "pci_segment": 3})
    assert r.status == 500 and r.json[-1] == "Invalid PCI segment id: 3"


# ---------------------------------------------------------------- section 3: implicit


def test_implicit_lowest_free_on_device_segment(chv: Any) -> None:
    c = chv("v53")
    boot(c, console={"mode": "Off"}, platform={"num_pci_segments": 3})
    assert c.put("vm.add-disk", {"path": "/a", "pci_segment": 2}).json["bdf"] == "0002:00:01.0"
    assert c.put("vm.add-disk", {"path": "/b", "pci_segment": 2}).json["bdf"] == "0002:00:02.0"
    assert c.put("vm.add-disk", {"path": "/c"}).json["bdf"] == "0000:00:02.0"


def test_full_bus_message(chv: Any) -> None:
    c = chv("v53")
    boot(c, console={"mode": "Off"}, disks=[{"path": f"/d{i}"} for i in range(30)])
    before = c.request("GET", "vm.info").body
    r = c.put("vm.add-disk", {"path": "/last", "id": "last"})
    assert r.status == 500
    assert r.json == [
        "Error from API",
        "The disk could not be added to the VM",
        "Error from device manager",
        "Failed to find an available PCI device ID",
        "Could not find an available device slot on the PCI bus",
    ]
    # CHV leaves the device node it created before the allocation (code-read quirk)
    after = c.info()
    assert "last" in after["device_tree"] and "_virtio-pci-last" not in after["device_tree"]
    assert c.request("GET", "vm.info").body != before
    r = c.put("vm.add-disk", {"path": "/last", "id": "last"})
    assert r.json[-1] == "Invalid identifier as it is not unique: last"


@pytest.mark.parametrize("mode", ["immediate", "never"])
def test_slot_freed_only_at_eject(chv: Any, mode: str) -> None:
    c = chv("v53", eject=mode)
    boot(c, disks=[{"path": "/a"}, {"path": "/b"}])
    assert c.bdfs()["_disk0"] == "0000:00:02.0"
    assert c.put("vm.remove-device", {"id": "_disk0"}).status == 204
    still = "_disk0" in c.info()["device_tree"]
    assert still is (mode == "never")
    r = c.put("vm.add-disk", {"path": "/c"})
    assert r.json["bdf"] == ("0000:00:02.0" if mode == "immediate" else "0000:00:05.0")
    if mode == "never":
        assert c.call(lambda: c.vmm.eject_now("_disk0"))
        assert "_disk0" not in c.info()["device_tree"]
        assert c.put("vm.add-disk", {"path": "/d"}).json["bdf"] == "0000:00:02.0"
    removed = [e for e in c.events if e["event"] == "device-removed"]
    assert removed and removed[0]["source"] == "vm"
    assert removed[0]["properties"] == {"id": "_disk0", "bdf": "0000:00:02.0"}
    assert set(removed[0]["timestamp"]) == {"secs", "nanos"}


def test_delay_eject_frees_after_the_delay(chv: Any) -> None:
    c = chv("v53", eject="immediate")
    boot(c, console={"mode": "Off"}, disks=[{"path": "/a"}])
    r = c.send(control.eject_request("delay", 5))
    assert r.status == 204
    c.send(control.eject_request("delay", 60_000))
    assert c.put("vm.remove-device", {"id": "_disk0"}).status == 204
    assert "_disk0" in c.info()["device_tree"]  # not ejected before the delay
    assert c.call(lambda: c.vmm.eject_now("_disk0"))
    assert c.put("vm.add-disk", {"path": "/b"}).json["bdf"] == "0000:00:01.0"
    c.send(control.eject_request("delay", 5))
    assert c.put("vm.remove-device", {"id": "_disk1"}).status == 204

    async def wait_removed() -> None:
        while sum(e["event"] == "device-removed" for e in c.events) < 2:
            await asyncio.sleep(0.005)

    c.handle.call(wait_removed(), timeout=30)
    assert "_disk1" not in c.info()["device_tree"]


def test_delayed_eject_survives_a_rejected_request(chv: Any) -> None:
    """A rejected request between vm.remove-device and the eject rolls the VMM back
    to its copy of the state: the pending eject must still happen there."""
    c = chv("v53", eject="immediate")
    boot(c, console={"mode": "Off"}, disks=[{"path": "/a"}, {"path": "/b"}])
    c.send(control.eject_request("delay", 50))
    assert c.put("vm.remove-device", {"id": "_disk0"}).status == 204
    bad = c.put("vm.add-disk", {"path": "/c", "pci_device_id": 0})  # reserved id: refused
    assert bad.status == 500, bad.body

    async def wait_removed() -> None:
        while not any(e["event"] == "device-removed" for e in c.events):
            await asyncio.sleep(0.005)

    c.handle.call(wait_removed(), timeout=30)
    assert "_disk0" not in c.info()["device_tree"]
    assert c.send(control.eject_status_request()).json["pending"] == {}
    r = c.put("vm.add-disk", {"path": "/d"})
    assert r.json == {"id": "_disk2", "bdf": "0000:00:01.0"}  # the freed slot


def test_eject_during_a_request_that_fails_stays_done() -> None:
    """The guest is not rolled back: an eject whose timer fires while a request is
    under way stays done when that request fails."""
    from fakechv.profiles import get_profile
    from fakechv.vmm import Vmm

    async def scenario() -> tuple[dict[str, str], str | None]:
        vmm = Vmm(get_profile("v53"), eject=EjectPolicy("delay", 0))
        vmm.create({"payload": KERNEL, "console": {"mode": "Off"}, "disks": [{"path": "/a"}]})
        vmm.boot()
        vmm.remove_device("_disk0")
        saved = vmm.checkpoint()  # a later request starts ...
        await asyncio.sleep(0.05)  # ... the guest ejects meanwhile ...
        vmm.rollback(saved)  # ... and the request fails
        return vmm.pending_ejects(), vmm.bdf_of("_disk0")

    assert asyncio.run(scenario()) == ({}, None)


def test_eject_now_control_endpoint(chv: Any) -> None:
    c = chv("v53", eject="never")
    boot(c, disks=[{"path": "/a"}])
    c.put("vm.remove-device", {"id": "_disk0"})
    got = c.send(control.eject_status_request()).json
    assert got == {"mode": "never", "delay_ms": 0, "pending": {"_disk0": "0000:00:02.0"}}
    assert c.send(control.eject_now_request("_disk0")).status == 204
    assert c.send(control.eject_now_request("_disk0")).status == 404
    assert c.send(control.eject_request("sometimes")).status == 400


def test_shared_counter_and_name_skipping(chv: Any) -> None:
    c = chv("v53")
    boot(c, console={"mode": "Off"}, disks=[{"path": "/a"}, {"path": "/b"}], net=[{"id": "_disk1"}])
    ids = {d["id"] for d in c.info()["config"]["disks"]}
    assert ids == {"_disk0", "_disk2"}  # _disk1 is taken by the net: skipped
    assert c.put("vm.add-pmem", {"file": "/p"}).json["id"] == "_pmem3"
    assert c.put("vm.add-net", {"tap": "t"}).json["id"] == "_net4"


def test_counter_never_decreases_after_removal(chv: Any) -> None:
    c = chv("v53")
    boot(c, disks=[{"path": "/a"}])
    c.put("vm.remove-device", {"id": "_disk0"})
    assert c.put("vm.add-disk", {"path": "/b"}).json["id"] == "_disk1"


def test_generated_ids_written_back_but_not_for_rng_console(chv: Any) -> None:
    c = chv("v53")
    boot(c, disks=[{"path": "/a"}], devices=[{"path": "/sys/x"}])
    cfg = c.info()["config"]
    assert cfg["disks"][0]["id"] == "_disk0"
    assert cfg["devices"][0]["id"] == "_vfio1"
    assert "id" not in cfg["rng"] and "id" not in cfg["console"]


# ---------------------------------------------------------------- section 4: explicit


@pytest.mark.parametrize("profile", WITH_IDS)
def test_explicit_ids_reserved_before_implicit_allocation(chv: Any, profile: str) -> None:
    c = chv(profile)
    boot(c, disks=[{"path": "/a"}, {"path": "/b"}], net=[{"tap": "t", "pci_device_id": 2}])
    assert c.bdfs() == {
        "__console": "0000:00:01.0",
        "_disk0": "0000:00:03.0",
        "_disk1": "0000:00:04.0",
        "_net2": "0000:00:02.0",
        "__rng": "0000:00:05.0",
    }


def test_v51_ignores_pci_device_id(chv: Any) -> None:
    c = chv("v51")
    boot(c, disks=[{"path": "/a", "pci_device_id": 9}])
    assert c.bdfs()["_disk0"] == "0000:00:02.0"
    assert "pci_device_id" not in c.info()["config"]["disks"][0]


@pytest.mark.parametrize(
    ("profile", "kind", "accepted"),
    [
        ("v52", "balloon", False),
        ("v53", "balloon", True),
        ("v52", "rng", True),
        ("v51", "rng", False),
        ("v53", "rtc", True),
    ],
)
def test_pci_device_id_support_by_kind_and_version(
    chv: Any, profile: str, kind: str, accepted: bool
) -> None:
    c = chv(profile)
    bodies: dict[str, dict[str, Any]] = {
        "balloon": {"size": 0},
        "rng": {"src": "/dev/urandom"},
        "rtc": {},
    }
    dev = bodies[kind]
    boot(c, console={"mode": "Off"}, **{kind: {**dev, "pci_device_id": 9}})
    got = c.bdfs()[f"__{kind}"]
    assert (got == "0000:00:09.0") is accepted


@pytest.mark.parametrize("profile", WITH_IDS)
def test_duplicate_explicit_id_fails_boot_and_keeps_what_was_made(chv: Any, profile: str) -> None:
    """The device manager made every device (ids generated, images opened and typed)
    before the slots were reserved: the config keeps what it wrote (finding of the
    differential, vmm/src/device_manager.rs@v53.0:2641-2674 before 4478), the VM is
    not created."""
    c = chv(profile)
    c.put(
        "vm.create",
        {"payload": KERNEL, "disks": [{"path": "/a", "pci_device_id": 5}, {"path": "/b"}]},
    )
    assert c.put("vm.add-net", {"tap": "t", "pci_device_id": 5}).status == 204  # cold: no check
    before = c.request("GET", "vm.info").body
    r = c.put("vm.boot")
    assert r.status == 500
    assert r.json == [
        "Error from API",
        "The VM could not boot",
        "Error from device manager",
        "Could not reserve the PCI device ID",
        "Valid PCI device identifier but already used: 5",
    ]
    info = c.info()
    assert info["state"] == "Created"
    assert not info.get("device_tree")
    disks = info["config"]["disks"]
    assert [(d["id"], d["image_type"]) for d in disks] == [("_disk0", "Raw"), ("_disk1", "Raw")]
    assert info["config"]["net"][0]["id"] == "_net2"
    assert c.request("GET", "vm.info").body != before


@pytest.mark.parametrize("profile", WITH_IDS)
def test_duplicate_explicit_id_at_hotplug_exact_body(chv: Any, profile: str) -> None:
    c = chv(profile)
    boot(c, disks=[{"path": "/a", "pci_device_id": 6}])
    before = c.request("GET", "vm.info").body
    r = c.put("vm.add-net", {"tap": "t", "id": "n1", "pci_device_id": 6})
    assert r.status == 500
    assert r.json == [
        "Error from API",
        "The network device could not be added to the VM",
        "Error from device manager",
        "Failed to find an available PCI device ID",
        "Valid PCI device identifier but already used: 6",
    ]
    after = c.info()
    assert after["config"] == json.loads(before)["config"]


@pytest.mark.parametrize("profile", WITH_IDS)
def test_explicit_id_range_and_reserved_zero(chv: Any, profile: str) -> None:
    c = chv(profile)
    c.put("vm.create", {"payload": KERNEL, "platform": {"num_pci_segments": 2}})
    r = c.put("vm.add-disk", {"path": "/a", "pci_device_id": 32})
    assert r.status == error_status(profile, "validation")
    assert r.json[-1] == "Given PCI device ID (32) is out of the supported range of 0..32"
    r = c.put("vm.add-disk", {"path": "/a", "pci_device_id": 0})
    assert r.json[-1] == "Given PCI device ID (0) is reserved"
    r = c.put("vm.add-disk", {"path": "/a", "pci_device_id": 0, "pci_segment": 1})
    if profile == "head":
        assert r.status == 204
        c.put("vm.boot")
        assert c.bdfs()["_disk0"] == "0001:00:00.0"
    else:
        assert r.json[-1] == "Given PCI device ID (0) is reserved"


def test_create_does_not_validate_boot_does(chv: Any) -> None:
    c = chv("v53")
    r = c.put("vm.create", {"payload": KERNEL, "disks": [{"path": "/a", "pci_device_id": 40}]})
    assert r.status == 204
    r = c.put("vm.boot")
    assert r.json == [
        "Error from API",
        "The VM could not boot",
        "Failed to validate config",
        "Given PCI device ID (40) is out of the supported range of 0..32",
    ]


def test_missing_payload_is_accepted_by_create_and_refused_by_boot(chv: Any) -> None:
    c = chv("v53")
    # the spec marks payload required; the source has Option<PayloadConfig>
    assert c.request("PUT", "vm.create", json={"disks": []}, check=False).status == 204
    assert c.put("vm.boot").json[-2:] == [
        "Payload configuration is not bootable",
        "No bootitem provided: neither firmware nor kernel",
    ]


# ---------------------------------------------------------------- section 5: hotplug


@pytest.mark.parametrize("profile", ALL)
def test_identifier_not_unique_in_config(chv: Any, profile: str) -> None:
    c = chv(profile)
    boot(c, disks=[{"path": "/a", "id": "data"}])
    r = c.put("vm.add-net", {"tap": "t", "id": "data"})
    assert r.status == error_status(profile, "not_unique")
    assert r.json == [
        "Error from API",
        "The network device could not be added to the VM",
        "Failed to validate config",
        "Identifier data is not unique",
    ]


@pytest.mark.parametrize(
    ("profile", "word"), [("v51", "invalid"), ("v53", "invalid"), ("head", "valid")]
)
def test_identifier_with_double_underscore(chv: Any, profile: str, word: str) -> None:
    c = chv(profile)
    c.put("vm.create", {"payload": KERNEL})
    r = c.put("vm.add-disk", {"path": "/a", "id": "__mine"})
    assert r.json[-1] == f"Identifier __mine is not {word}"
    assert r.status == error_status(profile, "validation")


def test_readding_id_before_eject_hits_device_tree_check(chv: Any) -> None:
    c = chv("v53", eject="never")
    boot(c, disks=[{"path": "/a", "id": "data"}])
    c.put("vm.remove-device", {"id": "data"})
    r = c.put("vm.add-disk", {"path": "/a", "id": "data"})
    assert r.status == 500
    assert r.json == [
        "Error from API",
        "The disk could not be added to the VM",
        "Error from device manager",
        "Invalid identifier as it is not unique: data",
    ]


def test_cold_add_appends_and_returns_204_without_body(chv: Any) -> None:
    c = chv("v53")
    c.put("vm.create", {"payload": KERNEL, "net": [{"tap": "t0"}]})
    r = c.put("vm.add-disk", {"path": "/a"})
    assert (r.status, r.body) == (204, b"")
    c.put("vm.boot")
    # config order, not call order: the disk sorts before the net
    assert c.bdfs()["_disk0"] == "0000:00:02.0"
    assert c.bdfs()["_net1"] == "0000:00:03.0"


def test_only_one_vsock(chv: Any) -> None:
    c = chv("v53")
    boot(c, vsock={"cid": 3, "socket": "/v"})
    r = c.put("vm.add-vsock", {"cid": 4, "socket": "/w"})
    assert r.json == [
        "Error from API",
        "The vsock device could not be added to the VM",
        "Too many virtio-vsock devices",
    ]


@pytest.mark.parametrize(
    ("profile", "second"), [("v51", 204), ("v52", 204), ("v53", 500), ("head", 204)]
)
def test_second_remove_before_eject(chv: Any, profile: str, second: int) -> None:
    c = chv(profile, eject="never")
    boot(c, disks=[{"path": "/a"}])
    assert c.put("vm.remove-device", {"id": "_disk0"}).status == 204
    r = c.put("vm.remove-device", {"id": "_disk0"})
    assert r.status == second
    if second != 204:
        assert r.json[-1] == "Failed to find device corresponding to the given identifier: _disk0"


@pytest.mark.parametrize("profile", ALL)
def test_remove_unknown_and_not_removable(chv: Any, profile: str) -> None:
    c = chv(profile)
    boot(c)
    r = c.put("vm.remove-device", {"id": "nope"})
    assert r.status == error_status(profile, "unknown_device")
    # v52 and before do not name the id (vmm/src/device_manager.rs@v52.0:476)
    named = "" if profile in ("v51", "v52", "cyberus") else ": nope"
    assert r.json[-1] == f"Failed to find device corresponding to the given identifier{named}"
    r = c.put("vm.remove-device", {"id": "__rng"})
    assert r.status == 500
    assert r.json[-1] == "Not allowed to remove this type of device from the VM: rng"


@pytest.mark.parametrize("profile", ALL)
def test_remove_when_not_booted(chv: Any, profile: str) -> None:
    c = chv(profile)
    c.put("vm.create", {"payload": KERNEL, "disks": [{"path": "/a", "id": "d"}]})
    assert c.put("vm.remove-device", {"id": "d"}).status == 204
    assert c.info()["config"]["disks"] == []
    r = c.put("vm.remove-device", {"id": "d"})
    assert r.json == [
        "Error from API",
        "The device could not be removed from the VM",
        'No device with id "d" to remove',
    ]
    assert r.status == error_status(profile, "unknown_device")
    # the id in Rust's {:?}: quotes, backslashes, \0 and C1 controls escaped
    r = c.put("vm.remove-device", {"id": 'a"\\\u0000\u0085\u00e9'})
    assert r.json[-1] == 'No device with id "a\\"\\\\\\0\\u{85}\u00e9" to remove'


def test_add_device_refuses_more_than_one_fd(chv: Any) -> None:
    c = chv("v53")
    boot(c, cpus={"boot_vcpus": 2, "max_vcpus": 2})  # two queue pairs need two vCPUs
    r1, w1 = os.pipe()
    try:
        r = c.request("PUT", "vm.add-device", json={"path": "/sys/x"}, fds=(r1, w1))
        assert (r.status, r.json) == (400, ["Bad Request"])
        r = c.request("PUT", "vm.add-net", json={"tap": "t"}, fds=(r1, w1))
        assert r.json[-1] == (  # one fd per queue pair (vmm/src/config.rs@v53.0:1849-1855)
            "Number of queues (2) to virtio_net does not match the number of FDs (4)"
        )
        r = c.request("PUT", "vm.add-net", json={"tap": "t", "num_queues": 4}, fds=(r1, w1))
        assert r.status == 200 and c.vmm.net_fds[r.json["id"]] == 2
        # CHV lists received fds as -1 (serialize_netconfig_fds): numbers mean nothing outside
        assert c.info()["config"]["net"][0]["fds"] == [-1, -1]
    finally:
        os.close(r1)
        os.close(w1)


def test_handler_closes_the_fds_it_does_not_keep() -> None:
    """Fds that came with a request are closed once it is answered, except a net's:
    CHV attaches those to the config before it knows the add fails (here: no VM), and
    leaves them open until it exits (``fakechv.fds``)."""
    vmm = Vmm(get_profile("v53"))
    api = Api(vmm)
    loop = asyncio.new_event_loop()
    pipes = [os.pipe() for _ in range(3)]
    try:
        for method, name, body, fds in [
            ("PUT", "vm.add-device", b'{"path": "/x"}', pipes[0]),
            ("PUT", "vm.add-net", b'{"tap": "t"}', pipes[1]),
            ("GET", "vm.nope", b"", pipes[2]),
        ]:
            loop.run_until_complete(api.handle(ApiRequest(method, "/api/v1/" + name, body, fds)))
    finally:
        loop.close()
    for fd in [*pipes[0], *pipes[2]]:
        with pytest.raises(OSError):
            os.fstat(fd)
    assert sorted(vmm.held_fds.open_fds()) == sorted(pipes[1])
    for fd in pipes[1]:
        os.fstat(fd)  # still open
    vmm.held_fds.close_all()
    for fd in pipes[1]:
        with pytest.raises(OSError):
            os.fstat(fd)


# ---------------------------------------------------------------- section 6: vm.info


@pytest.mark.parametrize(
    ("profile", "nulls"), [("v51", True), ("v52", True), ("v53", False), ("head", False)]
)
def test_info_unset_fields_null_or_omitted(chv: Any, profile: str, nulls: bool) -> None:
    c = chv(profile)
    c.put("vm.create", {"payload": KERNEL})
    info = c.info()
    assert ("device_tree" in info) is nulls and info.get("device_tree") is None
    assert info["state"] == "Created"
    assert ("firmware" in info["config"]["payload"]) is nulls
    c.put("vm.boot")
    tree = c.info()["device_tree"]
    child = tree["__rng"]
    assert child["parent"] == "_virtio-pci-__rng" and ("pci_bdf" in child) is nulls
    parent = tree["_virtio-pci-__rng"]
    assert parent["children"] == ["__rng"] and parent["pci_bdf"] == "0000:00:02.0"
    assert ("parent" in parent) is nulls
    assert parent["resources"][0]["PciBar"]["type_"] == "Mmio64"
    assert tree["__ioapic"].get("pci_bdf") is None


def test_vfio_is_a_single_node(chv: Any) -> None:
    c = chv("v53")
    boot(c, console={"mode": "Off"}, devices=[{"path": "/sys/x", "id": "gpu"}])
    node = c.info()["device_tree"]["gpu"]
    assert node["pci_bdf"] == "0000:00:02.0" and "parent" not in node and node["children"] == []
    assert "_virtio-pci-gpu" not in c.info()["device_tree"]


def test_states_pause_resume_shutdown(chv: Any) -> None:
    c = chv("v53")
    boot(c)
    assert c.put("vm.pause").status == 204 and c.info()["state"] == "Paused"
    r = c.put("vm.pause")
    assert r.json[-1] == "Invalid transition: InvalidStateTransition(Paused, Paused)"
    assert c.put("vm.resume").status == 204 and c.info()["state"] == "Running"
    assert c.put("vm.shutdown").status == 204
    info = c.info()
    assert info["state"] == "Created" and "device_tree" not in info
    events = [e["event"] for e in c.events]
    assert events[:2] == ["booting", "booted"] and "paused" in events and "shutdown" in events


# ---------------------------------------------------------------- section 7


def test_reboot_recomputes_implicit_bdfs(chv: Any) -> None:
    c = chv("v53")
    boot(c, disks=[{"path": "/a"}], net=[{"tap": "t"}])
    assert c.put("vm.add-disk", {"path": "/b"}).json == {"id": "_disk2", "bdf": "0000:00:05.0"}
    assert c.bdfs()["_net1"] == "0000:00:03.0"
    assert c.put("vm.reboot").status == 204
    assert c.bdfs() == {
        "__console": "0000:00:01.0",
        "_disk0": "0000:00:02.0",
        "_disk2": "0000:00:03.0",
        "_net1": "0000:00:04.0",
        "__rng": "0000:00:05.0",
    }


def test_reboot_closes_holes_but_keeps_explicit_ids(chv: Any) -> None:
    c = chv("v53")
    boot(c, disks=[{"path": "/a"}, {"path": "/b"}], net=[{"tap": "t", "pci_device_id": 9}])
    c.put("vm.remove-device", {"id": "_disk0"})
    assert c.bdfs()["_disk1"] == "0000:00:03.0"
    c.put("vm.reboot")
    assert c.bdfs() == {
        "__console": "0000:00:01.0",
        "_disk1": "0000:00:02.0",
        "_net2": "0000:00:09.0",
        "__rng": "0000:00:03.0",
    }
    assert [e["event"] for e in c.events][-2:] == ["rebooting", "rebooted"]


def test_snapshot_restore_keeps_holes(chv: Any, tmp_path: Path) -> None:
    c = chv("v53")
    boot(c, disks=[{"path": "/a"}, {"path": "/b"}, {"path": "/c"}])
    c.put("vm.remove-device", {"id": "_disk1"})
    before = c.bdfs()
    r = c.put("vm.snapshot", {"destination_url": f"file://{tmp_path}"})
    assert r.json[-1] == "Trying to snapshot while VM is running"
    c.put("vm.pause")
    assert c.put("vm.snapshot", {"destination_url": f"file://{tmp_path}"}).status == 204
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "state.json", "memory-ranges"}
    d = chv("v53")
    assert d.put("vm.restore", {"source_url": f"file://{tmp_path}"}).status == 204
    assert d.info()["state"] == "Paused"
    assert d.bdfs() == before
    assert d.info()["device_tree"] == c.info()["device_tree"]
    assert d.info()["config"] == c.info()["config"]
    d.put("vm.resume")
    # the hole is still there and the counter continued
    assert d.put("vm.add-disk", {"path": "/d"}).json == {"id": "_disk3", "bdf": "0000:00:03.0"}


def test_snapshot_bad_urls(chv: Any, tmp_path: Path) -> None:
    c = chv("v53")
    boot(c)
    c.put("vm.pause")
    r = c.put("vm.snapshot", {"destination_url": "http://x"})
    assert r.json[-1] == "Could not extract path from URL: http://x"
    r = c.put("vm.snapshot", {"destination_url": f"file://{tmp_path}/missing"})
    assert r.json[-1] == f'Destination is not a directory: "{tmp_path}/missing"'
    d = chv("v53")
    r = d.put("vm.restore", {"source_url": f"file://{tmp_path}"})
    assert r.status == 500 and "config.json" in r.json[-2]
    assert d.request("GET", "vm.info").status == 404


def test_migration_state_keeps_bdfs(chv: Any) -> None:
    src = chv("v53")
    boot(src, disks=[{"path": "/a"}, {"path": "/b"}], net=[{"tap": "t", "pci_device_id": 7}])
    src.put("vm.remove-device", {"id": "_disk0"})
    src.put("vm.add-net", {"tap": "u"})
    state = json.loads(json.dumps(src.call(src.vmm.export_migration_state)))
    dst = chv("v53")
    dst.call(lambda: dst.vmm.import_migration_state(state))
    assert dst.bdfs() == src.bdfs()
    assert dst.info()["config"] == src.info()["config"]
    assert dst.put("vm.add-pmem", {"file": "/p"}).json["id"] == "_pmem4"


@pytest.mark.parametrize(("profile", "worker"), [("v52", False), ("v53", True), ("head", True)])
def test_send_and_receive_migration_through_the_api(
    chv: Any, monkeypatch: pytest.MonkeyPatch, profile: str, worker: bool
) -> None:
    import types

    box: dict[str, Any] = {}

    class MigrationError(Exception):
        pass

    async def send_state(url: str, state: dict[str, Any]) -> None:
        if url == "unix:/fail":
            raise MigrationError("connection refused")
        box[url] = json.loads(json.dumps(state))

    async def receive_state(url: str, validate: Any = None) -> dict[str, Any]:
        state = dict(box[url])
        if validate is not None:
            validate(state)  # the receiver imports before it acknowledges
        return state

    fake = types.ModuleType("fakechv.migration")
    fake.MigrationError = MigrationError  # type: ignore[attr-defined]
    fake.send_state = send_state  # type: ignore[attr-defined]
    fake.receive_state = receive_state  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "fakechv.migration", fake)
    import fakechv

    monkeypatch.setattr(fakechv, "migration", fake, raising=False)

    src = chv(profile)
    boot(src, disks=[{"path": "/a"}, {"path": "/b"}])
    src.put("vm.remove-device", {"id": "_disk0"})
    bdfs = src.bdfs()
    before = src.request("GET", "vm.info").body
    r = src.put("vm.send-migration", {"destination_url": "unix:/fail"})
    if worker:  # v53+: 204 at once, the failure is the worker's event only
        assert r.status == 204
    else:
        assert r.status == 500 and r.json[-1] == "connection refused"
    assert src.request("GET", "vm.info").body == before  # (waits for the worker)
    assert [e["event"] for e in src.events][-2:] == ["migration-started", "migration-failed"]
    assert not src.api.shutdown_requested.is_set()
    assert src.put("vm.send-migration", {"destination_url": "unix:/ok"}).status == 204
    src.request("GET", "vm.ping")  # after the worker, if there is one
    assert src.api.shutdown_requested.is_set()
    finished = ["migration-started", "migration-finished"] if worker else ["migration-started"]
    assert [e["event"] for e in src.events][-len(finished) :] == finished
    dst = chv(profile)
    assert dst.put("vm.receive-migration", {"receiver_url": "unix:/ok"}).status == 204
    assert dst.bdfs() == bdfs and dst.info()["state"] == "Running"


# ---------------------------------------------------------------- section 8: HTTP


@pytest.mark.parametrize("profile", ALL)
def test_routes_match_spec_paths(profile: str) -> None:
    spec = load_spec(profile)  # with harness.chv.spec's source corrections (vm.nmi)
    spec_routes = {
        (path.lstrip("/"), method.upper())
        for path, item in spec["paths"].items()
        for method in item
        if (profile, path.lstrip("/")) not in SPEC_ROUTE_DEVIATIONS
    }
    ours = {(name, r.method) for name, r in PROFILES[profile].routes.items()}
    assert ours == spec_routes
    raw = (reference_dir() / PROFILE_SPECS[profile]).read_text()
    # the v51/v52 files say /vmm.nmi, the router registers /vm.nmi
    assert ("/vmm.nmi:" in raw) == (profile in ("v51", "v52"))
    for path, item in spec["paths"].items():
        name = path.lstrip("/")
        if name in PROFILES[profile].routes:
            has_body = "requestBody" in next(iter(item.values()))
            assert PROFILES[profile].routes[name].body is has_body, name


@pytest.mark.parametrize("profile", ALL)
def test_request_errors(chv: Any, profile: str) -> None:
    c = chv(profile)
    r = c.request("GET", "vm.nope")
    assert (r.status, r.json) == (404, ["Not Found"])
    assert r.headers["Server"] == "Cloud Hypervisor API"
    assert r.headers["Content-Type"] == "application/json"
    assert (c.request("GET", "vm.boot").status, c.request("GET", "vm.boot").json) == (
        400,
        ["Bad Request"],
    )
    assert c.request("PUT", "vm.info").json == ["Bad Request"]
    assert c.request("PUT", "vm.boot", raw=b"{}").json == ["Bad Request"]
    assert c.request("PUT", "vm.add-disk").json == ["Bad Request"]
    r = c.request("PUT", "vm.create", raw=b"{")
    assert r.status == 400 and r.json == [
        "Failed to deserialize JSON",
        "EOF while parsing an object at line 1 column 1",
    ]
    r = c.request("PUT", "vm.create", json={"payload": KERNEL, "cpus": {"boot_vcpus": "2"}})
    assert r.json[0] == "Failed to deserialize JSON"
    assert r.json[1].startswith('invalid type: string "2", expected u32 at line 1 column')
    r = c.request("PUT", "vm.create", json={"payload": KERNEL, "disks": [{"pci_segment": -1}]})
    assert r.json[1].startswith("invalid value: integer `-1`, expected u16")
    r = c.request("PUT", "vm.create", json={"payload": KERNEL, "rng": {}})
    assert r.json[1] == "missing field `src` at line 1 column 50"


@pytest.mark.parametrize("profile", ALL)
def test_status_codes_per_release(chv: Any, profile: str) -> None:
    c = chv(profile)
    r = c.request("GET", "vm.info")
    assert r.status == error_status(profile, "not_created")
    assert r.json == ["Error from API", "The VM info is not available", "VM is not created"]
    r = c.put("vm.boot")
    assert r.status == error_status(profile, "not_created")
    assert r.json[-1] == "VM config is missing"
    r = c.put("vm.pause")
    assert r.status == 500 and r.json[-1] == "VM is not running"


@pytest.mark.parametrize("profile", ALL)
def test_success_shapes(chv: Any, profile: str) -> None:
    c = chv(profile)
    ping = c.request("GET", "vmm.ping")
    assert ping.status == 200
    assert ping.json == {
        "build_version": get_profile(profile).build_version,
        "version": get_profile(profile).version,
        "pid": os.getpid(),
        "features": ["io_uring", "kvm"],
    }
    boot(c, disks=[{"path": "/a"}])
    r = c.request("PUT", "vm.nmi", check=profile not in ("v51", "v52"))
    assert (r.status, r.body) == (204, b"")
    assert "Content-Type" not in r.headers  # micro_http: no body, no Content-Type
    assert r.headers["Server"] == "Cloud Hypervisor API"
    unset = 2**64 - 1  # a latency before the first request (block.rs@v53.0:140-150)
    assert c.request("GET", "vm.counters").json == {
        "_disk0": {
            "read_bytes": 0,
            "read_ops": 0,
            "write_bytes": 0,
            "write_ops": 0,
            "read_latency_min": unset,
            "read_latency_max": unset,
            "read_latency_avg": unset // 10000,
            "write_latency_min": unset,
            "write_latency_max": unset,
            "write_latency_avg": unset // 10000,
        }
    }
    r = c.request("PUT", "vmm.shutdown", raw=b"{}", check=False)  # the body is ignored
    assert (r.status, r.body) == (200, b"")
    assert c.api.shutdown_requested.is_set()
    assert [e["event"] for e in c.events][-3:] == ["shutdown", "deleted", "shutdown"]


@pytest.mark.parametrize("profile", ["v51", "v52"])
def test_vmm_nmi_is_not_a_route_even_where_the_spec_says_so(chv: Any, profile: str) -> None:
    # the v51/v52 specs list /vmm.nmi; CHV's source registers /vm.nmi
    c = chv(profile)
    assert c.request("PUT", "vmm.nmi", check=False).json == ["Not Found"]
    assert c.request("PUT", "vm.nmi", check=False).json[-1] == "VM is not running"


@pytest.mark.parametrize("profile", ["v52", "v53"])
def test_rejected_requests_leave_info_unchanged(chv: Any, profile: str) -> None:
    c = chv(profile)
    boot(c, disks=[{"path": "/a", "id": "x", "pci_device_id": 3}], vsock={"cid": 3, "socket": "/v"})
    before = c.request("GET", "vm.info").body
    bad = [
        ("vm.add-disk", {"path": "/b", "id": "x"}),
        ("vm.add-disk", {"path": "/b", "pci_device_id": 40}),
        ("vm.add-vsock", {"cid": 9, "socket": "/w"}),
        ("vm.add-device", {"path": "/s", "id": "__x"}),
        ("vm.remove-device", {"id": "__console"}),
        ("vm.remove-device", {"id": "zzz"}),
        ("vm.create", {"payload": KERNEL}),
        ("vm.boot", None),
        ("vm.resume", None),
        ("vm.restore", {"source_url": "file:///nonexistent"}),
    ]
    if profile != "v52":  # v52's VMM thread panics on it (test_parity.py)
        bad.append(("vm.add-disk", {"path": "/b", "pci_segment": 4}))
    for name, body in bad:
        r = c.put(name, body)
        assert r.status >= 400, (name, r.body)
        assert c.request("GET", "vm.info").body == before, name
    assert c.request("PUT", "vm.add-disk", raw=b'{"path": 5}').status == 400
    assert c.request("GET", "vm.info").body == before


def test_version_banner() -> None:
    """The banners of the release builds in ../shared/chv (built without git metadata,
    so ``BUILD_VERSION`` is ``v`` + the Cargo version; head's Cargo version is 54.0.0)."""
    assert get_profile("v52").version_banner() == "cloud-hypervisor v52.0.0\n"
    assert get_profile("v53").version_banner() == (
        "cloud-hypervisor v53.0.0\nMigration Protocol Versions: 0\n"
    )
    assert get_profile("head").version_banner().startswith("cloud-hypervisor v54.0.0\n")
    with pytest.raises(ValueError, match="unknown fakechv profile"):
        get_profile("v50")


def test_iommu_hotplug_only_on_iommu_segments(chv: Any) -> None:
    c = chv("v53")
    boot(c, platform={"num_pci_segments": 2, "iommu_segments": [1]})
    assert c.bdfs()["__iommu"] == "0000:00:03.0"  # virtio-iommu last on segment 0
    r = c.put("vm.add-disk", {"path": "/a", "iommu": True})
    assert r.json == [
        "Error from API",
        "The disk could not be added to the VM",
        "Error from device manager",
        "Cannot hotplug device behind vIOMMU",
    ]
    r = c.put("vm.add-disk", {"path": "/a", "pci_segment": 1})
    assert r.json[-1] == "Device is on an IOMMU PCI segment (1) but not placed behind IOMMU"
    r = c.put("vm.add-disk", {"path": "/a", "pci_segment": 1, "iommu": True})
    assert r.json == {"id": "_disk0", "bdf": "0001:00:01.0"}


def test_vhost_user_and_user_devices_need_shared_memory(chv: Any) -> None:
    c = chv("v53")
    boot(c)
    fs = {"tag": "t", "socket": "/fs", "num_queues": 1, "queue_size": 128}
    r = c.put("vm.add-fs", fs)
    assert r.json[-1] == "Using vhost-user requires using shared memory or huge pages"
    r = c.put("vm.add-user-device", {"socket": "/u"})
    assert r.json[-1] == "Using user devices requires using shared memory or huge pages"
    d = chv("v53")
    boot(d, memory={"size": 1 << 30, "shared": True})
    assert d.put("vm.add-fs", fs).json == {"id": "_fs0", "bdf": "0000:00:03.0"}


@pytest.mark.parametrize("profile", ALL)
def test_boot_of_a_booted_vm(chv: Any, profile: str) -> None:
    c = chv(profile)
    boot(c)
    r = c.put("vm.boot")
    assert r.status == 500
    if profile in ("v51", "v52"):  # Vm::boot again on the existing VM
        assert r.json[-1] == "invalid VM state transition: Running to Running"
        c.put("vm.pause")
        assert c.put("vm.boot").status == 204 and c.info()["state"] == "Running"
    else:  # VmOwnership::Owned -> VmAlreadyCreated
        assert r.json == ["Error from API", "The VM could not boot", "VM is already created"]
