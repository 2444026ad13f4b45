"""Domain XML model: templates, classification, keys, descriptors, aliases, add/remove."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from harness.errors import AddressError, DomainError
from harness.model.address import PciAddress
from harness.model.domain import (
    CHV_CONFIG_KEYS,
    IMPLICIT_RNG_ALIAS,
    Device,
    DeviceClass,
    Domain,
    classify,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "domains"


def load(name: str) -> Domain:
    return Domain.load(DATA / name)


def dev(text: str) -> Device:
    return Device.from_xml(text)


def wrap(devices: str, name: str = "t") -> str:
    return (
        f"<domain type='kvm'><name>{name}</name><memory>1048576</memory>"
        f"<os><type>hvm</type><kernel>/k</kernel></os><devices>{devices}</devices></domain>"
    )


# ------------------------------------------------------------------ templates
def test_default_template() -> None:
    domain = load("domain-chv.xml")
    assert domain.name == "testvm"
    assert domain.uuid == "4eb6319a-4302-4407-9a56-802fc7e6a422"
    labels = [(d.label, d.address) for d in domain.devices()]
    assert labels == [
        ("disk vda", None),
        ("interface 52:54:00:e5:b8:01", PciAddress(0, 0, 2)),
    ]
    assert domain.console_mode() == "Off"
    assert not domain.has_virtio_console()


def test_static_bdf_templates() -> None:
    static = load("domain-chv-static-bdf.xml")
    assert {d.label: d.address for d in static.devices()} == {
        "disk vda": PciAddress(0, 0, 1),
        "interface 52:54:00:e5:b8:01": PciAddress(0, 0, 2),
        "rng explicit-rng-device": PciAddress(0, 0, 5),
    }
    with_function = load("domain-chv-static-bdf-with-function.xml")
    vda = with_function.find(("disk", "vda"))
    assert vda is not None
    assert vda.address == PciAddress(0, 0, 1, 1)


@pytest.mark.parametrize(
    ("name", "mac", "target", "kind", "address"),
    [
        ("new_interface.xml", "52:54:00:e5:b8:02", "tap2", "ethernet", None),
        ("new_interface_explicit_bdf.xml", "52:54:00:e5:b8:02", "tap2", "ethernet", 4),
        ("new_interface_type_network.xml", "52:54:00:e5:b8:03", "tap3", "network", None),
        ("new_interface_type_bridge.xml", "52:54:00:e5:b8:04", "tap4", "bridge", None),
    ],
)
def test_interface_templates(
    name: str, mac: str, target: str, kind: str, address: int | None
) -> None:
    device = Device.from_xml((DATA / name).read_text(), source=name)
    assert device.cls is DeviceClass.INTERFACE
    assert device.key == ("interface", mac)
    assert device.label == f"interface {mac}"
    assert device.descriptor == f"interface:{kind}:{mac}:{target}"
    assert device.address == (None if address is None else PciAddress(0, 0, address))


# ------------------------------------------------------------ classification
@pytest.mark.parametrize(
    ("xml", "cls"),
    [
        ("<disk type='file'><target dev='vdb' bus='virtio'/></disk>", DeviceClass.DISK),
        ("<disk type='file'><target dev='vdb'/></disk>", DeviceClass.DISK),
        ("<disk type='file'><target dev='sdb' bus='virtio'/></disk>", DeviceClass.DISK),
        ("<disk type='file'><target dev='sda' bus='sata'/></disk>", None),
        ("<disk type='file'><target dev='sda'/></disk>", None),
        ("<interface type='ethernet'/>", DeviceClass.INTERFACE),
        ("<interface type='network'/>", DeviceClass.INTERFACE),
        ("<interface type='vdpa'/>", DeviceClass.VDPA),
        ("<rng model='virtio'/>", DeviceClass.RNG),
        ("<filesystem type='mount'/>", DeviceClass.FILESYSTEM),
        ("<vsock model='virtio'/>", DeviceClass.VSOCK),
        ("<vsock/>", DeviceClass.VSOCK),
        ("<memballoon model='virtio'/>", DeviceClass.MEMBALLOON),
        ("<memballoon model='none'/>", None),
        ("<watchdog model='i6300esb'/>", DeviceClass.WATCHDOG),
        ("<hostdev mode='subsystem' type='pci'/>", DeviceClass.HOSTDEV),
        ("<hostdev mode='subsystem' type='usb'/>", None),
        ("<hostdev mode='capabilities' type='storage'/>", None),
        ("<console type='pty'><target type='virtio'/></console>", DeviceClass.CONSOLE),
        ("<console type='pty'><target type='serial'/></console>", None),
        ("<serial type='pty'><target port='0'/></serial>", None),
        ("<memory model='nvdimm'/>", DeviceClass.PMEM),
        ("<memory model='dimm'/>", None),
        ("<shmem name='x'/>", DeviceClass.SHMEM),
        ("<panic model='pvpanic'/>", DeviceClass.PANIC),
        ("<panic model='isa'/>", None),
        ("<input type='tablet'/>", None),
        ("<controller type='pci' model='pci-root'/>", None),
    ],
)
def test_classify(xml: str, cls: DeviceClass | None) -> None:
    assert classify(etree.fromstring(xml)) is cls


def test_every_class_has_a_chv_key() -> None:
    assert set(CHV_CONFIG_KEYS) == set(DeviceClass)
    assert DeviceClass.HOSTDEV.chv_key == "devices"
    assert DeviceClass.SHMEM.chv_key == "ivshmem"
    assert DeviceClass.PANIC.chv_key == "pvpanic"


def test_devices_keep_xml_order_and_skip_non_pci() -> None:
    domain = Domain.from_xml(
        wrap(
            "<disk type='file'><target dev='vdb'/></disk>"
            "<serial type='pty'><target port='0'/></serial>"
            "<interface type='ethernet'><mac address='52:54:00:AA:00:01'/></interface>"
            "<input type='keyboard' bus='ps2'/>"
            "<disk type='file'><target dev='vda'/></disk>"
        )
    )
    assert [d.label for d in domain.devices()] == [
        "disk vdb",
        "interface 52:54:00:aa:00:01",
        "disk vda",
    ]


# ------------------------------------------------------ keys, labels, descriptors
def test_keys_and_descriptors() -> None:
    disk = dev("<disk type='file'><source file='/img/vdb.img'/><target dev='vdb'/></disk>")
    assert disk.key == ("disk", "vdb")
    assert disk.descriptor == "disk:/img/vdb.img:vdb"
    nic = dev("<interface type='network'><mac address='DE:AD:BE:EF:13:37'/></interface>")
    assert nic.key == ("interface", "de:ad:be:ef:13:37")
    assert nic.descriptor == "interface:network:de:ad:be:ef:13:37:"
    rng = dev(
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend>"
        "<alias name='implicit-rng-device'/></rng>"
    )
    assert rng.key == ("rng", "implicit-rng-device")
    assert rng.label == "rng implicit-rng-device"
    assert rng.descriptor == "rng:/dev/urandom"
    balloon = dev("<memballoon model='virtio'><alias name='balloon0'/></memballoon>")
    assert balloon.key == ("memballoon", "balloon0")
    assert balloon.descriptor == "memballoon"


def test_device_from_xml_errors_name_the_source() -> None:
    with pytest.raises(DomainError, match=r"^nic\.xml:1: malformed XML"):
        Device.from_xml("<interface type='ethernet'>", source="nic.xml")
    with pytest.raises(DomainError, match=r"^nic\.xml: <input> is not a device"):
        Device.from_xml("<input type='tablet'/>", source="nic.xml")
    with pytest.raises(AddressError, match=r"device 'disk vdb'.*slot='0x20'"):
        Device.from_xml(
            "<disk type='file'><target dev='vdb'/><address type='pci' slot='32'/></disk>"
        )


def test_set_address_and_alias() -> None:
    disk = dev("<disk type='file'><target dev='vdb'/></disk>")
    disk.set_address(PciAddress(0, 0, 4))
    assert disk.address == PciAddress(0, 0, 4)
    disk.set_address(PciAddress(0, 0, 6))
    assert disk.address == PciAddress(0, 0, 6)
    assert len(disk.element.findall("address")) == 1
    disk.set_alias("ua-vdb")
    assert disk.alias == "ua-vdb"
    # the alias goes before the address, as libvirt writes it
    assert [c.tag for c in disk.element][-2:] == ["alias", "address"]
    disk.set_address(None)
    assert disk.address is None
    assert disk.element.find("address") is None


# ------------------------------------------------------------- domain parsing
def test_domain_errors_name_source_and_line() -> None:
    with pytest.raises(DomainError, match=r"^bad\.xml:2: malformed XML"):
        Domain.from_xml("<domain>\n<name>x</nam>\n</domain>", source="bad.xml")
    with pytest.raises(DomainError, match=r"^bad\.xml:1: the domain has no <name>"):
        Domain.from_xml("<domain type='kvm'><memory>1</memory></domain>", source="bad.xml")
    with pytest.raises(DomainError, match=r"expected a <domain> document, found <network>"):
        Domain.from_xml("<network/>", source="bad.xml")
    with pytest.raises(DomainError, match=r"nope\.xml: cannot read"):
        Domain.load(DATA / "nope.xml")


def test_save_is_atomic_and_round_trips(tmp_path: Path) -> None:
    domain = load("domain-chv.xml")
    target = tmp_path / "testvm.xml"
    domain.save(target)
    assert list(tmp_path.iterdir()) == [target]
    again = Domain.load(target)
    assert again.to_xml() == domain.to_xml()
    again.save(target)
    assert target.read_text() == domain.to_xml()
    with pytest.raises(DomainError, match="cannot write"):
        domain.save(tmp_path / "missing-dir" / "x.xml")


def test_copy_is_independent() -> None:
    domain = load("domain-chv.xml")
    clone = domain.copy()
    clone.remove_device(("disk", "vda"))
    assert domain.find(("disk", "vda")) is not None
    assert clone.find(("disk", "vda")) is None


def test_ensure_uuid() -> None:
    domain = Domain.from_xml(wrap(""))
    assert domain.uuid is None
    value = domain.ensure_uuid()
    assert domain.uuid == value
    assert domain.ensure_uuid() == value
    assert domain.root[1].tag == "uuid"


# ------------------------------------------------------------- add / remove
def test_add_device_goes_to_libvirts_place() -> None:
    domain = load("domain-chv.xml")
    nic = Device.from_xml((DATA / "new_interface.xml").read_text())
    added = domain.add_device(nic)
    assert added.element is not nic.element
    domain.add_device(dev("<disk type='file'><target dev='vdb'/></disk>"))
    domain.add_device(
        dev("<rng model='virtio'><backend model='random'>/dev/random</backend></rng>")
    )
    devices = domain.root.find("devices")
    assert devices is not None
    assert [c.tag for c in devices] == [
        "emulator",
        "disk",
        "disk",
        "interface",
        "interface",
        "serial",
        "rng",
    ]
    with pytest.raises(DomainError, match="interface 52:54:00:e5:b8:02 already exists"):
        domain.add_device(nic)


def test_remove_device() -> None:
    domain = load("domain-chv.xml")
    removed = domain.remove_device(("interface", "52:54:00:e5:b8:01"))
    assert removed.address == PciAddress(0, 0, 2)
    assert removed.element.getparent() is None
    assert [d.label for d in domain.devices()] == ["disk vda"]
    with pytest.raises(DomainError, match="no interface '52:54:00:e5:b8:01'"):
        domain.remove_device(("interface", "52:54:00:e5:b8:01"))


# ------------------------------------------------------------ implicit rng
def test_implicit_rng_added_once() -> None:
    domain = load("domain-chv.xml")
    rng = domain.ensure_implicit_rng()
    assert rng is not None
    assert rng.alias == IMPLICIT_RNG_ALIAS
    assert rng.descriptor == "rng:/dev/urandom"
    assert rng.element.get("model") == "virtio"
    assert domain.ensure_implicit_rng() is None
    assert [d.cls for d in domain.devices()].count(DeviceClass.RNG) == 1
    assert load("domain-chv-static-bdf.xml").ensure_implicit_rng() is None


# ------------------------------------------------------------------ aliases
def test_assign_aliases_is_deterministic_and_unique() -> None:
    xml = wrap(
        "<disk type='file'><target dev='vdb'/></disk>"
        "<disk type='file'><target dev='vda'/><alias name='virtio-disk1'/></disk>"
        "<interface type='ethernet'><mac address='52:54:00:00:00:01'/></interface>"
        "<interface type='ethernet'><mac address='52:54:00:00:00:02'/></interface>"
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
        "<memballoon model='virtio'/>"
    )
    first, second = Domain.from_xml(xml), Domain.from_xml(xml)
    first.assign_aliases()
    second.assign_aliases()
    aliases = [d.alias for d in first.devices()]
    assert aliases == [d.alias for d in second.devices()]
    assert aliases == ["virtio-disk0", "virtio-disk1", "net0", "net1", "rng0", "balloon0"]
    assert not any(a.startswith("__") for a in aliases if a)
    first.assign_aliases()  # idempotent
    assert [d.alias for d in first.devices()] == aliases


def test_assign_aliases_respects_reserved_and_vd_index() -> None:
    domain = Domain.from_xml(
        wrap("<disk type='file'><target dev='vdc'/></disk><interface type='ethernet'/>")
    )
    domain.assign_aliases(reserved={"net0"})
    assert [d.alias for d in domain.devices()] == ["virtio-disk2", "net1"]
    # an interface without a MAC is identified by its alias
    assert domain.devices()[1].key == ("interface", "net1")


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ("<rng model='virtio'><alias name='__rng'/></rng>", "'__rng' is not valid"),
        (
            "<rng model='virtio'><alias name='x'/></rng><memballoon model='virtio'>"
            "<alias name='x'/></memballoon>",
            "alias 'x' is used by more than one device",
        ),
    ],
)
def test_bad_aliases_rejected_without_change(devices: str, message: str) -> None:
    domain = Domain.from_xml(wrap(devices + "<disk type='file'><target dev='vda'/></disk>"))
    before = domain.to_xml()
    with pytest.raises(DomainError, match=message):
        domain.assign_aliases()
    assert domain.to_xml() == before


# ------------------------------------------------------------------ console
@pytest.mark.parametrize(
    ("console", "mode"),
    [
        ("", "Off"),
        ("<console type='pty'><target type='serial' port='0'/></console>", "Off"),
        ("<console type='pty'><target type='virtio' port='0'/></console>", "Pty"),
        ("<console type='file'><source path='/tmp/c'/><target type='virtio'/></console>", "File"),
        (
            "<console type='unix'><source mode='bind' path='/s'/><target type='virtio'/></console>",
            "Socket",
        ),
    ],
)
def test_console_mode(console: str, mode: str) -> None:
    domain = Domain.from_xml(wrap(console))
    assert domain.console_mode() == mode
    assert domain.has_virtio_console() is (mode != "Off")


# ------------------------------------------------------------------- layout
@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("domain-*.xml")))
def test_to_xml_reproduces_libvirt_layout_of_templates(name: str) -> None:
    text = (DATA / name).read_text()
    assert Domain.from_xml(text).to_xml() == text


def test_to_xml_escapes_and_keeps_namespaces() -> None:
    domain = Domain.from_xml(
        "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        '<name>a&amp;b</name><!-- note --><description x="it\'s &quot;q&quot;">&lt;d&gt;'
        "</description><metadata><my:x xmlns:my='urn:x' v='1'>t</my:x></metadata>"
        "<qemu:commandline><qemu:arg value='-x'/></qemu:commandline></domain>"
    )
    out = domain.to_xml()
    assert "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' type='kvm'>" in out
    assert "<name>a&amp;b</name>" in out
    assert "<!-- note -->" in out
    assert "x='it&apos;s &quot;q&quot;'" in out
    again = Domain.from_xml(out)
    assert again.to_xml() == out
    description = again.root.find("description")
    assert description is not None
    assert description.get("x") == 'it\'s "q"'
    assert description.text == "<d>"
    assert again.root.find("{urn:x}x", namespaces=None) is None  # inside <metadata>
    metadata = again.root.find("metadata")
    assert metadata is not None
    assert metadata[0].get("v") == "1"


def test_has_empty_address() -> None:
    empty = dev(
        "<disk type='file'><target dev='vdb'/>"
        "<address type='pci' domain='0x0000' bus='0x00' slot='0x00' function='0x3'/></disk>"
    )
    assert empty.address is None
    assert empty.has_empty_address
    assert not dev("<disk type='file'><target dev='vdb'/></disk>").has_empty_address
    assert not dev(
        "<disk type='file'><target dev='vdb'/><address type='pci' slot='4'/></disk>"
    ).has_empty_address
