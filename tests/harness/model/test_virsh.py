"""virsh command lines: parsing, and the device XML virsh builds."""

from __future__ import annotations

import pytest
from lxml import etree

from harness.model.domain import Device
from harness.model.virsh import (
    COMMANDS,
    VirshError,
    disk_xml,
    interface_xml,
    parse_command,
    parse_virsh_address,
)

NFS = "/var/lib/libvirt/storage-pools/nfs-share"


@pytest.mark.parametrize(
    ("line", "name", "args"),
    [
        ("define domain", "define", {"file": "domain"}),
        ("virsh define --file domain", "define", {"file": "domain"}),
        ("undefine testvm", "undefine", {"domain": "testvm"}),
        ("create domain", "create", {"file": "domain"}),
        ("start testvm", "start", {"domain": "testvm"}),
        ("destroy --domain testvm", "destroy", {"domain": "testvm"}),
        ("shutdown testvm", "shutdown", {"domain": "testvm"}),
        ("reboot testvm", "reboot", {"domain": "testvm"}),
        ("managedsave testvm", "managedsave", {"domain": "testvm"}),
        (
            "attach-device testvm nic --persistent",
            "attach-device",
            {"domain": "testvm", "file": "nic", "persistent": True},
        ),
        (
            "detach-device testvm --file nic --live --config",
            "detach-device",
            {"domain": "testvm", "file": "nic", "live": True, "config": True},
        ),
        (
            f"attach-disk --domain testvm --target vdb --source {NFS}/vdb.img",
            "attach-disk",
            {"domain": "testvm", "target": "vdb", "source": f"{NFS}/vdb.img"},
        ),
        (
            "attach-disk testvm /tmp/disk.raw vdb --targetbus virtio --subdriver=raw",
            "attach-disk",
            {
                "domain": "testvm",
                "source": "/tmp/disk.raw",
                "target": "vdb",
                "targetbus": "virtio",
                "subdriver": "raw",
            },
        ),
        (
            "detach-disk testvm vdb --live",
            "detach-disk",
            {"domain": "testvm", "target": "vdb", "live": True},
        ),
        (
            "attach-interface --target l33t_n37 --persistent --type network --source "
            "libvirt-testnetwork --mac DE:AD:BE:EF:13:37 --model virtio testvm",
            "attach-interface",
            {
                "target": "l33t_n37",
                "persistent": True,
                "type": "network",
                "source": "libvirt-testnetwork",
                "mac": "DE:AD:BE:EF:13:37",
                "model": "virtio",
                "domain": "testvm",
            },
        ),
        (
            "detach-interface testvm network --mac de:ad:be:ef:13:37 --config",
            "detach-interface",
            {"domain": "testvm", "type": "network", "mac": "de:ad:be:ef:13:37", "config": True},
        ),
        (
            "save testvm '/tmp/test vm.save'",
            "save",
            {"domain": "testvm", "file": "/tmp/test vm.save"},
        ),
        ("restore /tmp/testvm.save", "restore", {"file": "/tmp/testvm.save"}),
        ("daemon-restart", "daemon-restart", {}),
        (
            "migrate --domain testvm --desturi dst --live --p2p --parallel-connections 4",
            "migrate",
            {
                "domain": "testvm",
                "desturi": "dst",
                "live": True,
                "p2p": True,
                "parallel-connections": "4",
            },
        ),
    ],
)
def test_parse_each_command(line: str, name: str, args: dict[str, object]) -> None:
    cmd = parse_command(line)
    assert cmd.name == name
    assert cmd.args == args


def test_every_command_is_covered_by_the_table() -> None:
    assert set(COMMANDS) == {
        "define",
        "undefine",
        "create",
        "start",
        "destroy",
        "shutdown",
        "reboot",
        "managedsave",
        "attach-device",
        "detach-device",
        "attach-disk",
        "detach-disk",
        "attach-interface",
        "detach-interface",
        "save",
        "restore",
        "daemon-restart",
        "migrate",
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "empty command"),
        ("frob testvm", "unknown command: 'frob'"),
        ("attach-disk testvm /a.img", "command 'attach-disk' requires <target> option"),
        ("start", "command 'start' requires <domain> option"),
        ("start testvm extra", "unexpected data 'extra'"),
        ("attach-disk testvm a vdb --bogus", "doesn't support option --bogus"),
        ("attach-disk testvm a vdb --address", "option --address requires an argument"),
        ("attach-device testvm nic --persistent --current", "mutually exclusive"),
        ("attach-device testvm nic --live=yes", "takes no value"),
        ("attach-disk testvm 'unclosed vdb", "No closing quotation"),
        ("attach-disk testvm a vdb --target vdc", "given twice"),
    ],
)
def test_parse_errors(line: str, message: str) -> None:
    with pytest.raises(VirshError, match=message):
        parse_command(line)


def test_device_flags() -> None:
    cmd = parse_command("detach-disk testvm vdb --persistent")
    assert cmd.device_flags() == {
        "persistent": True,
        "config": False,
        "live": False,
        "current": False,
    }


def test_attach_disk_xml_as_virsh_builds_it() -> None:
    cmd = parse_command(
        f"attach-disk --domain testvm --target vdb --source {NFS}/vdb.img --targetbus virtio"
        " --address pci:0.0.17.0 --persistent"
    )
    assert disk_xml(cmd) == (
        "<disk type='file'>\n"
        f"  <source file='{NFS}/vdb.img'/>\n"
        "  <target dev='vdb' bus='virtio'/>\n"
        "  <address type='pci' domain='0x0000' bus='0x00' slot='0x17' function='0x0'/>\n"
        "</disk>\n"
    )
    device = Device.from_xml(disk_xml(cmd))
    assert device.label == "disk vdb"
    assert device.address is not None and device.address.to_chv_bdf() == "0000:00:17.0"


def test_attach_disk_xml_with_driver_mode_and_type() -> None:
    cmd = parse_command(
        "attach-disk testvm /tmp/disk.raw vdb --subdriver raw --mode readonly "
        "--sourcetype block --type disk --alias ua-data --serial S1"
    )
    assert disk_xml(cmd) == (
        "<disk type='block' device='disk'>\n"
        "  <driver type='raw'/>\n"
        "  <source dev='/tmp/disk.raw'/>\n"
        "  <target dev='vdb'/>\n"
        "  <readonly/>\n"
        "  <serial>S1</serial>\n"
        "  <alias name='ua-data'/>\n"
        "</disk>\n"
    )
    # a vd* target without a bus is still a virtio disk for the model
    assert Device.from_xml(disk_xml(cmd)).cls.value == "disk"


def test_attach_disk_xml_escapes_the_source() -> None:
    cmd = parse_command('attach-disk testvm "/tmp/a&b\'.img" vdb')
    root = etree.fromstring(disk_xml(cmd).encode())
    source = root.find("source")
    assert source is not None and source.get("file") == "/tmp/a&b'.img"


def test_attach_disk_xml_errors() -> None:
    with pytest.raises(VirshError, match="Unknown source type: 'nfs'"):
        disk_xml(parse_command("attach-disk testvm a vdb --sourcetype nfs"))
    with pytest.raises(VirshError, match="No support for rw in command 'attach-disk'"):
        disk_xml(parse_command("attach-disk testvm a vdb --mode rw"))
    with pytest.raises(VirshError, match=r"expecting a pci:0000\.00\.00\.00 or ccw"):
        disk_xml(parse_command("attach-disk testvm a vdb --address scsi:0.0.0"))


@pytest.mark.parametrize(
    ("text", "element"),
    [
        (
            "pci:0.0.20.0",  # not range-checked by virsh: libvirt's parser refuses it
            "<address type='pci' domain='0x0000' bus='0x00' slot='0x20' function='0x0'/>",
        ),
        (
            "pci:0000.00.1f.5",
            "<address type='pci' domain='0x0000' bus='0x00' slot='0x1f' function='0x5'/>",
        ),
        (
            "pci:0x1:0x2:0x3:0x4",  # any one separator, 0x prefixes accepted by strtoul
            "<address type='pci' domain='0x0001' bus='0x02' slot='0x03' function='0x4'/>",
        ),
        (
            "pci:0.0.a.0junk",  # trailing junk after the function is ignored
            "<address type='pci' domain='0x0000' bus='0x00' slot='0x0a' function='0x0'/>",
        ),
        ("ccw:fe.0.1", "<address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0001'/>"),
    ],
)
def test_address_hex_parsing(text: str, element: str) -> None:
    assert parse_virsh_address(text)[1] == element


def test_address_multifunction() -> None:
    kind, element = parse_virsh_address("pci:0.0.5.0", multifunction=True)
    assert kind == "pci" and element.endswith(" multifunction='on'/>")


@pytest.mark.parametrize(
    "text", ["0.0.4.0", "pci:", "pci:0.0.4", "pci:0.0.g.0", "pci:0.0.-4.0", "pci:1.2", "foo:1"]
)
def test_address_errors(text: str) -> None:
    with pytest.raises(VirshError, match=r"Invalid address\."):
        parse_virsh_address(text)


def test_attach_interface_xml_as_virsh_builds_it() -> None:
    cmd = parse_command(
        "attach-interface --target l33t_n37 --persistent --type network --source "
        "libvirt-testnetwork --mac DE:AD:BE:EF:13:37 --model virtio testvm"
    )
    assert interface_xml(cmd) == (
        "<interface type='network'>\n"
        "  <source network='libvirt-testnetwork'/>\n"
        "  <target dev='l33t_n37'/>\n"
        "  <mac address='DE:AD:BE:EF:13:37'/>\n"
        "  <model type='virtio'/>\n"
        "</interface>\n"
    )
    device = Device.from_xml(interface_xml(cmd))
    assert device.label == "interface de:ad:be:ef:13:37"
    bridge = parse_command("attach-interface testvm bridge br4 --managed")
    assert interface_xml(bridge).startswith("<interface type='bridge' managed='yes'>\n")
    assert "<source bridge='br4'/>" in interface_xml(bridge)


def test_attach_interface_unsupported_type() -> None:
    # virsh builds no XML for ethernet (or unknown) interfaces
    for kind in ("ethernet", "wifi"):
        cmd = parse_command(f"attach-interface testvm {kind} tap9")
        with pytest.raises(VirshError, match=f"No support for {kind} in command"):
            interface_xml(cmd)
