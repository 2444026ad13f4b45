"""The ``cyberus`` profile: the Cyberus Technology fork of CHV (cyberus-technology/
cloud-hypervisor PR #32), v52.0 with ``PciDeviceCommonConfig.pci_device_id`` as
``#[serde(default, alias = "pci_device_id", rename = "bdf_device")]``. Each difference
from ``v52`` has a test here; the v52 rules themselves are test_rules.py's."""

from __future__ import annotations

from typing import Any

import pytest

from fakechv.profiles import get_profile
from fakechv.vmm import EjectPolicy
from tests.fakechv.test_rules import KERNEL, Chv, boot


@pytest.fixture
def chv(fakechv_server: Any) -> Any:
    def make(profile: str = "cyberus", eject: str = "immediate") -> Chv:
        return Chv(fakechv_server(profile, eject=EjectPolicy(eject)), profile)

    return make


def test_bdf_device_places_a_device(chv: Any) -> None:
    c = chv("cyberus")
    boot(c, disks=[{"path": "/a", "bdf_device": 7}], net=[{"tap": "t", "pci_device_id": 9}])
    bdfs = c.bdfs()
    assert bdfs["_disk0"] == "0000:00:07.0"  # the fork's name
    assert bdfs["_net1"] == "0000:00:09.0"  # the upstream name, its alias


def test_vm_info_writes_bdf_device(chv: Any) -> None:
    c = chv("cyberus")
    boot(c, disks=[{"path": "/a", "pci_device_id": 7}])
    disk = c.info()["config"]["disks"][0]
    assert disk["bdf_device"] == 7 and "pci_device_id" not in disk
    r = c.put("vm.add-disk", {"path": "/b", "bdf_device": 12})
    assert r.json == {"id": "_disk1", "bdf": "0000:00:0c.0"}


def test_both_names_in_one_object_is_a_duplicate_field(chv: Any) -> None:
    c = chv("cyberus")
    r = c.request(
        "PUT",
        "vm.create",
        raw=b'{"payload":{"kernel":"/k"},"disks":[{"path":"/a","bdf_device":3,"pci_device_id":4}]}',
        check=False,
    )
    assert r.status == 400
    assert r.json[0] == "Failed to deserialize JSON"
    assert r.json[1].startswith("duplicate field `bdf_device` at line 1 column")


@pytest.mark.parametrize("profile", ["v52", "v53"])
def test_upstream_drops_bdf_device(chv: Any, profile: str) -> None:
    """Upstream has no such field and no deny_unknown_fields: the fork's libvirt pins
    nothing on upstream CHV."""
    c = chv(profile)
    boot(c, disks=[{"path": "/a", "bdf_device": 7}])
    assert c.bdfs()["_disk0"] == "0000:00:02.0"  # after the console, as CHV places it


def test_the_banner_reads_as_52_0() -> None:
    banner = get_profile("cyberus").version_banner()
    assert banner.startswith("cloud-hypervisor v52.0")
    assert get_profile("cyberus").config_types == "cyberus"


def test_otherwise_it_is_v52(chv: Any) -> None:
    """A second remove before the eject is accepted (v53 refuses it), balloon has no id."""
    c = chv("cyberus", eject="never")
    boot(c, disks=[{"path": "/a", "id": "d"}])
    assert c.put("vm.remove-device", {"id": "d"}).status == 204
    assert c.put("vm.remove-device", {"id": "d"}).status == 204
    assert KERNEL
