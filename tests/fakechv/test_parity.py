"""What the differential check (``bdf-harness diff``) found fakechv doing differently
from the real Cloud Hypervisor, one regression test per fix, each against the rule of
CHV's source it follows.

The tests' requests are also sequences of the differential (``harness.differential.rules``
records them), so each is compared with the real binaries too: an image whose name
starts with ``missing`` stays missing on both sides, every other one is a real image.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fakechv.images import Images
from fakechv.vmm import EjectPolicy
from tests.fakechv.test_rules import Chv

PROFILES = ["v52", "v53", "head"]


@pytest.fixture
def images(tmp_path: Path) -> Callable[..., str]:
    """``image(name, size=1 MiB, head=b"")``: a sparse image file in ``tmp_path``."""

    def make(name: str, size: int = 1 << 20, head: bytes = b"") -> str:
        path = tmp_path / name
        with path.open("wb") as f:
            f.write(head)
            f.truncate(size)
        return str(path)

    return make


@pytest.fixture
def kernel(images: Callable[..., str]) -> dict[str, str]:
    return {"kernel": images("vmlinux", 4096)}


@pytest.fixture
def chv_check(fakechv_server: Any) -> Callable[..., Chv]:
    """fakechv as the ``fakechv`` command runs it: ``--images check``."""

    def make(profile: str = "v53", eject: str = "immediate") -> Chv:
        handle = fakechv_server(profile, eject=EjectPolicy(eject), images=Images("check"))
        return Chv(handle, profile)

    return make


def _boot(c: Chv, kernel: dict[str, str], **config: Any) -> Any:
    r = c.put("vm.create", {"payload": kernel, **config})
    assert r.status == 204, r.body
    return c.put("vm.boot")


def _no_such_file(path: str) -> list[str]:
    return [f"I/O error (path={path} op=open)", "No such file or directory (os error 2)"]


# ---- section 5: hotplug


@pytest.mark.parametrize("profile", PROFILES)
def test_hot_add_of_a_missing_image_fails_and_uses_up_its_id(
    chv_check: Callable[..., Chv],
    images: Callable[..., str],
    kernel: dict[str, str],
    tmp_path: Path,
    profile: str,
) -> None:
    """make_virtio_block_device: the id first, then open_disk (device_manager.rs@v53.0
    :2691-2746); the device never reaches the tree."""
    c = chv_check(profile)
    assert _boot(c, kernel, disks=[{"path": images("root.img")}]).status == 204
    missing = str(tmp_path / "missing.img")
    r = c.put("vm.add-disk", {"path": missing})
    assert r.status == 500
    assert r.json == [
        "Error from API",
        "The disk could not be added to the VM",
        "Error from device manager",
        "Cannot open disk path",
        *_no_such_file(missing),
    ]
    assert "_disk1" not in c.info()["device_tree"]
    r = c.put("vm.add-disk", {"path": images("data.img")})
    assert r.json["id"] == "_disk2"  # _disk1 went with the failed add


@pytest.mark.parametrize("profile", PROFILES)
def test_a_disk_gets_the_detected_image_type(
    chv_check: Callable[..., Chv], images: Callable[..., str], kernel: dict[str, str], profile: str
) -> None:
    """detect_image_type (block/src/lib.rs@v53.0:540): the QCOW2 magic, else raw; the
    type is written into the disk's config (device_manager.rs@v53.0:2755-2785)."""
    c = chv_check(profile)
    r = c.put("vm.create", {"payload": kernel, "disks": [{"path": images("root.img")}]})
    assert c.info()["config"]["disks"][0]["image_type"] == "Unknown"
    assert c.put("vm.boot").status == 204
    assert c.info()["config"]["disks"][0]["image_type"] == "Raw"
    qcow = images("q.qcow2", head=struct.pack(">I", 0x514649FB))
    r = c.put("vm.add-disk", {"path": qcow, "image_type": "Raw"})
    assert r.status == 500
    assert r.json[-1] == (
        "Disk image type does not match expected type: specified = raw, detected = qcow2"
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_an_image_in_use_cannot_be_hot_added_again(
    chv_check: Callable[..., Chv], images: Callable[..., str], kernel: dict[str, str], profile: str
) -> None:
    """A hot-added image is locked at once (device_manager.rs@v53.0:2866-2873): an OFD
    write lock (block/src/io/fcntl.rs@v53.0:143); a read-only disk takes a read lock,
    which another read lock shares."""
    c = chv_check(profile)
    root = images("root.img")
    shared = images("shared.img")
    assert (
        _boot(c, kernel, disks=[{"path": root}, {"path": shared, "readonly": True}]).status == 204
    )
    r = c.put("vm.add-disk", {"path": root})
    assert r.status == 500
    assert r.json == [
        "Error from API",
        "The disk could not be added to the VM",
        "Error from device manager",
        "Cannot lock images of all block devices",
        f"Failed to get Write lock for disk image: {root}",
        "The file is already locked",
    ]
    assert c.put("vm.add-disk", {"path": shared, "readonly": True}).status == 200
    r = c.put("vm.add-disk", {"path": shared})
    assert r.json[-2:] == [
        f"Failed to get Write lock for disk image: {shared}",
        "The file is already locked",
    ]


@pytest.mark.parametrize("profile", PROFILES)
def test_an_eject_lets_go_of_the_image(
    chv_check: Callable[..., Chv], images: Callable[..., str], kernel: dict[str, str], profile: str
) -> None:
    c = chv_check(profile)
    data = images("data.img")
    assert _boot(c, kernel, disks=[{"path": images("root.img")}]).status == 204
    assert c.put("vm.add-disk", {"path": data, "id": "hot"}).status == 200
    assert c.put("vm.remove-device", {"id": "hot"}).status == 204
    assert c.put("vm.add-disk", {"path": data, "id": "again"}).status == 200


@pytest.mark.parametrize("profile", PROFILES)
def test_a_hot_add_that_fails_at_its_slot_keeps_the_image_locked(
    chv_check: Callable[..., Chv], images: Callable[..., str], kernel: dict[str, str], profile: str
) -> None:
    """The block device is made (and its image locked) before the slot is allocated;
    the orphan keeps it until the VM goes (finding 22 of the differential)."""
    c = chv_check(profile)
    data = images("data.img")
    assert _boot(c, kernel, disks=[{"path": images("root.img"), "pci_device_id": 10}]).status == 204
    r = c.put("vm.add-disk", {"path": data, "pci_device_id": 10})
    assert r.status == 500 and r.json[-1] == "Valid PCI device identifier but already used: 10"
    r = c.put("vm.add-disk", {"path": data})
    assert r.json[-1] == "The file is already locked"
    assert c.put("vm.reboot").status == 204
    assert c.put("vm.add-disk", {"path": data}).status == 200


# ---- section 6: boot


@pytest.mark.parametrize("profile", PROFILES)
def test_a_boot_with_a_missing_image_loses_the_disk_list(
    chv_check: Callable[..., Chv],
    images: Callable[..., str],
    kernel: dict[str, str],
    tmp_path: Path,
    profile: str,
) -> None:
    """make_virtio_block_devices takes the disk list out of the config and returns on
    the error without putting it back (device_manager.rs@v53.0:2904-2911); no VM."""
    c = chv_check(profile)
    missing = str(tmp_path / "missing.img")
    r = _boot(c, kernel, disks=[{"path": images("root.img")}, {"path": missing}], net=[{}])
    assert r.status == 500
    assert r.json == [
        "Error from API",
        "The VM could not boot",
        "Error from device manager",
        "Cannot open disk path",
        *_no_such_file(missing),
    ]
    info = c.info()
    assert info["state"] == "Created"
    assert not info.get("device_tree")
    assert not info["config"].get("disks")
    assert info["config"]["net"][0].get("id") is None  # the nets were not made yet


@pytest.mark.parametrize("profile", PROFILES)
def test_one_image_twice_fails_the_boot_at_the_locks(
    chv_check: Callable[..., Chv], images: Callable[..., str], kernel: dict[str, str], profile: str
) -> None:
    """Vm::boot locks the disks after the devices are made (vm.rs@v53.0:2761-2766);
    the VM stays created with its devices (lib.rs@v53.0:2285-2287)."""
    c = chv_check(profile)
    root = images("root.img")
    r = _boot(c, kernel, disks=[{"path": root}, {"path": root}])
    assert r.status == 500
    assert r.json == [
        "Error from API",
        "The VM could not boot",
        "Error locking disk images: Another instance likely holds a lock",
        "Cannot lock images of all block devices",
        f"Failed to get Write lock for disk image: {root}",
        "The file is already locked",
    ]
    info = c.info()
    assert info["state"] == "Created"
    assert {"_disk0", "_disk1"} <= set(info["device_tree"])


@pytest.mark.parametrize("profile", PROFILES)
def test_a_missing_kernel_fails_the_boot_after_the_devices(
    chv_check: Callable[..., Chv], images: Callable[..., str], tmp_path: Path, profile: str
) -> None:
    c = chv_check(profile)
    missing = {"kernel": str(tmp_path / "missing-vmlinux")}
    r = _boot(c, missing, disks=[{"path": images("root.img")}])
    assert r.status == 500
    assert r.json == [
        "Error from API",
        "The VM could not boot",
        "Cannot open kernel file",
        "No such file or directory (os error 2)",
    ]
    info = c.info()
    assert info["state"] == "Created" and "_disk0" in info["device_tree"]


def test_the_locks_are_real_between_processes(
    chv_check: Callable[..., Chv], images: Callable[..., str], kernel: dict[str, str]
) -> None:
    """An OFD lock, so another VMM (or a real CHV) sharing the image is refused."""
    root = images("root.img")
    first = chv_check("v53")
    assert _boot(first, kernel, disks=[{"path": root}]).status == 204
    second = chv_check("v53")
    r = _boot(second, kernel, disks=[{"path": root}])
    assert r.status == 500 and r.json[-1] == "The file is already locked"
    assert first.put("vm.shutdown").status == 204
    assert _boot(chv_check("v53"), kernel, disks=[{"path": root}]).status == 204


# ---- section 7: vm.info


@pytest.mark.parametrize("profile", PROFILES)
def test_a_cold_plugged_disk_on_segment_0_has_a_32_bit_bar(
    chv_check: Callable[..., Chv], images: Callable[..., str], kernel: dict[str, str], profile: str
) -> None:
    """use_64bit_bar_for_virtio_device (vmm/src/device_manager.rs@v53.0:1217): 64-bit
    unless a block device is cold-plugged on segment 0."""
    c = chv_check(profile)
    disks = [{"path": images("a.img")}, {"path": images("b.img"), "pci_segment": 1}]
    assert _boot(c, kernel, disks=disks, platform={"num_pci_segments": 2}).status == 204
    assert c.put("vm.add-disk", {"path": images("c.img")}).status == 200

    def bar(node: str) -> str:
        return str(c.info()["device_tree"][node]["resources"][0]["PciBar"]["type_"])

    assert bar("_virtio-pci-_disk0") == "Mmio32"
    assert bar("_virtio-pci-_disk1") == "Mmio64"  # segment 1
    assert bar("_virtio-pci-_disk2") == "Mmio64"  # hot-plugged
    assert bar("_virtio-pci-__rng") == "Mmio64"


@pytest.mark.parametrize("profile", PROFILES)
def test_a_pmem_device_node_holds_its_memory_range(
    chv_check: Callable[..., Chv], images: Callable[..., str], kernel: dict[str, str], profile: str
) -> None:
    c = chv_check(profile)
    assert _boot(c, kernel, pmem=[{"file": images("pm.img", 4 << 20)}]).status == 204
    (resource,) = c.info()["device_tree"]["_pmem0"]["resources"]
    assert resource["MmioAddressRange"]["size"] == 4 << 20


@pytest.mark.parametrize("profile", PROFILES)
def test_a_booted_net_reports_its_tap_mac(
    chv_check: Callable[..., Chv], images: Callable[..., str], kernel: dict[str, str], profile: str
) -> None:
    """v52 and v53 write the tap's MAC into the config as host_mac; head does not, and
    gives a net its random mac at boot instead of at vm.create."""
    c = chv_check(profile)
    r = c.put("vm.create", {"payload": kernel, "net": [{}]})
    assert r.status == 204
    created = c.info()["config"]["net"][0]
    assert (created.get("mac") is None) is (profile == "head")
    assert created.get("host_mac") is None
    assert c.put("vm.boot").status == 204
    booted = c.info()["config"]["net"][0]
    assert str(booted["mac"]).startswith("2e:")
    assert (booted.get("host_mac") is not None) is (profile != "head")


def test_iommu_segments_turn_the_iommu_on(
    chv_check: Callable[..., Chv], kernel: dict[str, str]
) -> None:
    """VmConfig::validate: ``iommu |= platform.iommu_segments.is_some()``
    (vmm/src/config.rs@v53.0:3454)."""
    c = chv_check("v53")
    platform = {"num_pci_segments": 2, "iommu_segments": [1]}
    assert _boot(c, kernel, platform=platform).status == 204
    assert c.info()["config"]["iommu"] is True


def test_a_restore_from_a_missing_snapshot_says_what_chv_says(
    chv_check: Callable[..., Chv], tmp_path: Path
) -> None:
    """recv_vm_config (vmm/src/migration/mod.rs@v53.0:53-60)."""
    c = chv_check("v53")
    r = c.put("vm.restore", {"source_url": f"file://{tmp_path}"})
    assert r.status == 500
    v52 = chv_check("v52").put("vm.restore", {"source_url": f"file://{tmp_path}"})
    assert v52.json[-2:] == [  # v52 names no file
        "Failed to receive migratable component snapshot",
        "No such file or directory (os error 2)",
    ]
    assert r.json == [
        "Error from API",
        "The VM could not be restored",
        "Cannot restore VM",
        "Failed to receive migratable component snapshot",
        f'Error opening VM config snapshot file "{tmp_path}/config.json"',
        "No such file or directory (os error 2)",
    ]


# ---- section 6: back ends


@pytest.mark.parametrize("profile", PROFILES)
def test_a_vhost_user_device_needs_its_socket(
    chv_check: Callable[..., Chv], kernel: dict[str, str], tmp_path: Path, profile: str
) -> None:
    """make_virtio_fs_device connects to the back end first; the fs list is taken out of
    the config and lost with the error (device_manager.rs@v53.0:3306)."""
    c = chv_check(profile)
    socket_path = str(tmp_path / "missing-fs.sock")
    memory = {"size": 1 << 30, "shared": True}
    fs = [{"tag": "t", "socket": socket_path, "num_queues": 1, "queue_size": 128}]
    r = _boot(c, kernel, memory=memory, fs=fs)
    assert r.status == 500
    assert r.json == [
        "Error from API",
        "The VM could not boot",
        "Error from device manager",
        "Cannot create virtio-fs device",
        *(
            ["Timed out waiting for vhost-user connection"]  # head waits for the socket
            if profile == "head"
            else [
                "Connection to socket failed",
                "vhost-user: can't connect to peer: No such file or directory (os error 2)",
            ]
        ),
    ]
    assert not c.info()["config"].get("fs")


@pytest.mark.skipif(os.path.exists("/dev/vfio/vfio"), reason="this machine has VFIO")
def test_a_vfio_device_needs_the_vfio_container(
    chv_check: Callable[..., Chv], kernel: dict[str, str]
) -> None:
    c = chv_check("v53")
    r = _boot(c, kernel, devices=[{"path": "/sys/bus/pci/devices/0000:01:00.0"}])
    assert r.json[3:] == [
        "Cannot create a VFIO device",
        "failed to open /dev/vfio/vfio container: No such file or directory (os error 2)",
        "No such file or directory (os error 2)",
    ]


@pytest.mark.parametrize("profile", PROFILES)
def test_a_nets_received_fds_are_listed_as_minus_one_on_every_release(
    chv_check: Callable[..., Chv], kernel: dict[str, str], profile: str
) -> None:
    """serialize_netconfig_fds: one -1 per fd, also where unset fields are null (v52)."""
    c = chv_check(profile)
    assert _boot(c, kernel, cpus={"boot_vcpus": 2, "max_vcpus": 2}).status == 204
    r1, w1 = os.pipe()
    try:
        r = c.request("PUT", "vm.add-net", json={"tap": "t", "num_queues": 4}, fds=(r1, w1))
    finally:
        os.close(r1)
        os.close(w1)
    assert r.status == 200, r.body
    assert c.info()["config"]["net"][0]["fds"] == [-1, -1]


@pytest.mark.skipif(os.path.exists("/dev/vfio/vfio"), reason="this machine has VFIO")
@pytest.mark.parametrize("profile", PROFILES)
def test_a_failed_vfio_hot_add_keeps_its_slot(
    chv_check: Callable[..., Chv], kernel: dict[str, str], images: Callable[..., str], profile: str
) -> None:
    """add_vfio_device takes its slot before it opens the container and does not give
    it back (real v52, v53 and head: the next disk gets the slot after it)."""
    c = chv_check(profile)
    assert _boot(c, kernel).status == 204
    r = c.put("vm.add-device", {"path": "/sys/bus/pci/devices/0000:01:00.0", "id": "vf0"})
    assert r.status == 500 and "Cannot create a VFIO device" in r.json
    d1 = c.put("vm.add-disk", {"path": images("a.img"), "id": "d1"})
    assert d1.json["bdf"] == "0000:00:04.0", "slot 03 stays with the failed VFIO device"
    info = c.info()
    assert "vf0" not in info["device_tree"], "no node is left, only the slot"
    assert [d.get("id") for d in info["config"].get("devices") or []] == []
    again = c.put("vm.add-disk", {"path": images("b.img"), "id": "vf0"})
    assert again.status == 200 and again.json["bdf"] == "0000:00:05.0", "the id is free"


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ({"num_queues": 4}, "Queue count (4) must not exceed boot vCPUs (1)"),
        ({"num_queues": 1}, "Number of queues (1) to virtio_net should be higher than 2"),
    ],
)
def test_net_queue_checks(
    chv_check: Callable[..., Chv], device: dict[str, Any], message: str
) -> None:
    """NetConfig::validate (vmm/src/config.rs@v53.0:1845-1870)."""
    c = chv_check("v53")
    assert c.put("vm.create", {"payload": {"kernel": "/k"}}).status == 204
    r = c.put("vm.add-net", device)
    assert r.status == 500 and r.json[-2:] == ["Failed to validate config", message]


def test_a_disk_has_at_most_one_queue_per_vcpu(chv_check: Callable[..., Chv]) -> None:
    c = chv_check("v53")
    assert c.put("vm.create", {"payload": {"kernel": "/k"}}).status == 204
    r = c.put("vm.add-disk", {"path": "/a", "num_queues": 2})
    assert r.json[-1] == "Queue count (2) must not exceed boot vCPUs (1)"


# ---- section 4: segments


def test_v52_panics_on_a_segment_it_does_not_have(spawn_fakechv: Any) -> None:
    """v52 checks a device's segment only with ``platform`` set and then indexes past
    its segments: the VMM thread panics (device_manager.rs@v52.0:4499); the HTTP thread
    answers that request and any later one with a channel error, and the process exits
    with 1."""
    child = spawn_fakechv("--profile", "v52")
    assert child.put("vm.create", {"payload": {"kernel": "/k"}}).status == 204
    assert child.put("vm.boot").status == 204
    r = child.put("vm.add-disk", {"path": "/b", "pci_segment": 1})
    assert (r.status, r.json) == (
        500,
        ["Error from API", "API response receive error", "receiving on a closed channel"],
    )
    assert child.proc.wait(10) == 1


# ---- section 5: eject


def test_a_realistic_eject_takes_as_long_as_the_shared_guest(fakechv_server: Any) -> None:
    """The shared guest ejects 2.4-8 s after vm.remove-device; ``realistic`` waits as
    long, so a driver that reuses the slot early fails on fakechv as on CHV."""
    import time

    from fakechv.device_manager import REALISTIC_EJECT_MS, realistic_eject_ms

    low, high = REALISTIC_EJECT_MS
    assert all(low <= realistic_eject_ms(f"_disk{n}") <= high for n in range(50))
    assert realistic_eject_ms("hot") == realistic_eject_ms("hot")
    c = Chv(fakechv_server("v53", eject=EjectPolicy("realistic")), "v53")
    r = c.put("vm.create", {"payload": {"kernel": "/k"}, "disks": [{"path": "/a"}]})
    assert r.status == 204 and c.put("vm.boot").status == 204
    assert c.put("vm.add-disk", {"path": "/b", "id": "hot", "pci_device_id": 9}).status == 200
    started = time.monotonic()
    assert c.put("vm.remove-device", {"id": "hot"}).status == 204
    r = c.put("vm.add-disk", {"path": "/c", "pci_device_id": 9})
    assert r.json[-1] == "Valid PCI device identifier but already used: 9"  # not yet ejected
    assert time.monotonic() - started < low / 1000


@pytest.mark.parametrize(
    ("ident", "written"),
    [  # what real v53 wrote for each id (vm.remove-device of an unknown id, VM created)
        ('a"\\\0\u0085\u00e9\u200b', '"a\\"\\\\\\0\\u{85}\u00e9\\u{200b}"'),
        ("x\u00a0y", '"x\\u{a0}y"'),
        ("x\u0301y", '"x\\u{301}y"'),
        ("\u0301y", '"\\u{301}y"'),
        ("x\u2028y", '"x\\u{2028}y"'),
        ("x\uffffy", '"x\\u{ffff}y"'),
        ("x\ue000y", '"x\\u{e000}y"'),
        ("x\U0001f600y", '"x\U0001f600y"'),
        ("x\u3000y", '"x\\u{3000}y"'),
        ("x\u00ady", '"x\\u{ad}y"'),
        ("x\U000e0001y", '"x\\u{e0001}y"'),
    ],
)
def test_an_id_in_an_error_is_written_as_rusts_debug_writes_it(
    chv_check: Callable[..., Chv], kernel: dict[str, str], ident: str, written: str
) -> None:
    c = chv_check("v53")
    assert c.put("vm.create", {"payload": kernel}).status == 204
    r = c.put("vm.remove-device", {"id": ident})
    assert r.json[-1] == f"No device with id {written} to remove"
