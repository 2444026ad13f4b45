"""Full snapshots work their addresses out from the XML they kept: a definition changed
after the snapshot does not change what the snapshot says, and a failed step that moved
a device is reported with the device, the side and both BDFs."""

from __future__ import annotations

from harness.checks.snapshot import changed_after_failure, snapshot_of
from harness.checks.view import DomainView
from harness.model.address import PciAddress
from harness.model.domain import Domain

XML = """<domain type='kvm'><name>vm</name><devices>
<disk type='file' device='disk'><source file='/a.img'/><target dev='vdb' bus='virtio'/>
<address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></disk>
</devices></domain>"""


def _views(live: Domain, persistent: Domain) -> dict[str, DomainView]:
    view = DomainView("vm", "running", live, persistent, chv_info={"config": {}})
    view.chv_bdfs = {"0000:00:05.0": "disk1"}
    view.chv_owners = {"disk1": ("disk vdb", "disk")}
    return {"vm": view}


def test_a_move_after_the_snapshot_is_reported_with_both_bdfs() -> None:
    live, persistent = Domain.from_xml(XML), Domain.from_xml(XML)
    before = snapshot_of(_views(live, persistent), full=True)
    disk = live.devices()[0]
    disk.set_address(PciAddress(0, 0, 6, 0))  # the same object the snapshot looked at
    after = snapshot_of(_views(live, persistent), full=True)
    assert before.addresses["vm"]["live"]["disk/vdb"] == ("disk vdb", "0000:00:05.0")
    assert after.addresses["vm"]["live"]["disk/vdb"] == ("disk vdb", "0000:00:06.0")
    found = changed_after_failure(before, after, "host")
    assert [(v.device, v.side, v.expected, v.actual) for v in found] == [
        ("disk vdb", "live", "0000:00:05.0", "0000:00:06.0")
    ]


def test_nothing_changed_means_no_violation_and_no_address_work() -> None:
    live, persistent = Domain.from_xml(XML), Domain.from_xml(XML)
    before = snapshot_of(_views(live, persistent), full=True)
    after = snapshot_of(_views(live, persistent), full=True)
    assert before.unchanged(after, "vm")
    assert changed_after_failure(before, after, "host") == []
    assert before._addresses is None and after._addresses is None  # never worked out


def test_a_changed_vm_info_alone_is_reported() -> None:
    live, persistent = Domain.from_xml(XML), Domain.from_xml(XML)
    before = snapshot_of(_views(live, persistent), full=True)
    views = _views(live, persistent)
    views["vm"].chv_info = {"config": {"disks": []}}
    after = snapshot_of(views, full=True)
    found = changed_after_failure(before, after, "host")
    assert [(v.device, v.side) for v in found] == [("domain vm", "chv")]
