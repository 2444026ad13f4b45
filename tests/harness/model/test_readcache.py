"""Cached reads of a definition: every change through the model is seen at once, by every
view of the same element; a change made around the model is caught in verify mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.model import readcache
from harness.model.address import PciAddress
from harness.model.domain import Device, DeviceClass, Domain

XML = (
    "<domain type='kvm'><name>t</name><memory>1048576</memory>"
    "<os><type>hvm</type><kernel>/k</kernel></os><devices>"
    "<disk type='file' device='disk'><source file='/a.img'/><target dev='vda' bus='virtio'/>"
    "<address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/></disk>"
    "<interface type='ethernet'><mac address='52:54:00:00:00:01'/><model type='virtio'/>"
    "</interface></devices></domain>"
)


@pytest.fixture
def plain() -> Iterator[None]:
    """Reads as production does them: cached, not checked against fresh ones."""
    readcache.verify(False)
    try:
        yield
    finally:
        readcache.verify(True)


def _labels(dom: Domain) -> list[str]:
    return [d.label for d in dom.devices()]


def test_an_address_set_through_one_view_is_read_by_every_other(plain: None) -> None:
    dom = Domain.from_xml(XML)
    first = dom.devices()[0]
    assert first.address == PciAddress(0, 0, 4, 0)
    other = Device(first.element)  # a second view of the same element
    assert other.address == PciAddress(0, 0, 4, 0)
    other.set_address(PciAddress(0, 0, 9, 0))
    assert first.address == PciAddress(0, 0, 9, 0)
    assert dom.devices()[0].address == PciAddress(0, 0, 9, 0)
    other.set_address(None)
    assert first.address is None


def test_an_alias_set_changes_the_key_and_label_of_every_view(plain: None) -> None:
    dom = Domain.from_xml(XML)
    nic = dom.devices()[1]
    rng = dom.add_device(Device.from_xml("<rng model='virtio'><backend>/dev/r</backend></rng>"))
    cached = next(d for d in dom.devices() if d.cls is DeviceClass.RNG)
    assert cached.key == ("rng", "") and cached.label == "rng"
    rng.set_alias("rng7")
    assert cached.key == ("rng", "rng7") and cached.label == "rng rng7"
    assert nic.label == "interface 52:54:00:00:00:01"


def test_added_and_removed_devices_show_in_the_list(plain: None) -> None:
    dom = Domain.from_xml(XML)
    assert _labels(dom) == ["disk vda", "interface 52:54:00:00:00:01"]
    dom.add_device(Device.from_xml("<disk type='file'><target dev='vdb' bus='virtio'/></disk>"))
    assert _labels(dom) == ["disk vda", "disk vdb", "interface 52:54:00:00:00:01"]
    dom.remove_device(("disk", "vda"))
    assert _labels(dom) == ["disk vdb", "interface 52:54:00:00:00:01"]
    listed = dom.devices()
    listed.clear()  # the caller's list, not the cache
    assert len(dom.devices()) == 2


def test_a_change_around_the_model_is_a_stale_read_in_verify_mode() -> None:
    dom = Domain.from_xml(XML)
    disk = dom.devices()[0]
    assert disk.address == PciAddress(0, 0, 4, 0)
    address = disk.element.find("address")
    assert address is not None
    address.set("slot", "0x07")  # straight on the lxml tree: the model does not know
    with pytest.raises(readcache.StaleRead, match="address"):
        _ = disk.address
    container = dom.root.find("devices")
    assert container is not None
    container.remove(disk.element)
    with pytest.raises(readcache.StaleRead, match="devices"):
        dom.devices()


def test_without_verify_a_change_around_the_model_is_not_seen(plain: None) -> None:
    """What verify mode guards against: the cache is only as good as the model's
    record of its changes."""
    dom = Domain.from_xml(XML)
    disk = dom.devices()[0]
    assert disk.address == PciAddress(0, 0, 4, 0)
    address = disk.element.find("address")
    assert address is not None
    address.set("slot", "0x07")
    assert disk.address == PciAddress(0, 0, 4, 0)
    readcache.changed()
    assert disk.address == PciAddress(0, 0, 7, 0)
