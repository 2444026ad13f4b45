"""The reference allocator: define rule, hotplug precedence, and catalogue sequences.

The catalogue scenarios are replayed at allocator level: the live and the persistent
definitions are Domain objects; an attach is choose_hotplug_address + add_device to the
definitions the flags select; a live detach removes from the live definition only; start
makes the live definition a copy of the persistent one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.driver.allocator import (
    FIRST_SLOT,
    LAST_SLOT,
    SLOTS,
    SlotMap,
    adopt_reported,
    assign_at_define,
    check_no_duplicates,
    choose_hotplug_address,
    cross_conflicts,
    free_slots,
    prepare_hotplug,
)
from harness.errors import AddressError, AllocationError
from harness.model.address import PciAddress, validate_for_chv
from harness.model.domain import Device, Domain

DATA = Path(__file__).resolve().parents[2] / "data" / "domains"
NFS = "/var/lib/libvirt/storage-pools/nfs-share"
NIC_KEY = ("interface", "52:54:00:e5:b8:02")


def template(name: str) -> Domain:
    return Domain.load(DATA / name)


def nic(name: str = "new_interface.xml") -> Device:
    return Device.from_xml((DATA / name).read_text(), source=name)


def disk(target: str, address: str | None = None, source: str | None = None) -> Device:
    addr = ""
    if address is not None:
        attrs = PciAddress.from_virsh(address).to_xml_attrs()
        addr = "<address " + " ".join(f"{k}='{v}'" for k, v in attrs.items()) + "/>"
    src = source or f"{NFS}/{target}.img"
    return Device.from_xml(
        f"<disk type='file' device='disk'><source file='{src}'/>"
        f"<target dev='{target}' bus='virtio'/>{addr}</disk>"
    )


def slots(domain: Domain | None) -> dict[int, str]:
    """{slot: descriptor} like the catalogue's parse_devices_from_dom_def."""
    if domain is None:
        return {}
    return {d.address.slot: d.descriptor for d in domain.devices() if d.address is not None}


class Vm:
    """Live and persistent definitions of one domain, driven by the reference rules."""

    def __init__(self, domain: Domain, *, persistent: bool = True) -> None:
        assign_at_define(domain)
        self.persistent: Domain | None = domain if persistent else None
        self.live: Domain | None = domain.copy()

    def attach(self, device: Device, *, live: bool = True, config: bool = False) -> PciAddress:
        addr = choose_hotplug_address(device, live=self.live, persistent=self.persistent)
        targets = [d for d, on in ((self.live, live), (self.persistent, config)) if on]
        for target in targets:
            assert target is not None
            added = target.add_device(device)
            added.set_address(addr)
        return addr

    def detach(self, key: tuple[str, str], *, live: bool = True, config: bool = False) -> None:
        if live:
            assert self.live is not None
            self.live.remove_device(key)
        if config:
            assert self.persistent is not None
            self.persistent.remove_device(key)

    def restart(self) -> None:
        assert self.persistent is not None
        self.live = self.persistent.copy()


# ------------------------------------------------------------------ SlotMap
def test_constants() -> None:
    assert (SLOTS, FIRST_SLOT, LAST_SLOT) == (32, 1, 31)


def test_slotmap_from_domains_and_lowest_free() -> None:
    domain = template("domain-chv-static-bdf.xml")
    slotmap = SlotMap.from_domains(domain, None)
    assert slotmap.taken(PciAddress(0, 0, 1)) == "disk vda"
    assert slotmap.taken(PciAddress(0, 0, 5)) == "rng explicit-rng-device"
    assert slotmap.taken(PciAddress(0, 0, 3)) is None
    assert slotmap.lowest_free() == PciAddress(0, 0, 3)
    assert slotmap.lowest_free(1) == PciAddress(1, 0, 1)
    assert slotmap.as_dict()["0000:00:02.0"] == "interface 52:54:00:e5:b8:01"


def test_slotmap_full_segment() -> None:
    slotmap = SlotMap()
    for slot in range(FIRST_SLOT, LAST_SLOT + 1):
        slotmap.reserve(PciAddress(0, 0, slot), f"disk {slot}")
    with pytest.raises(AllocationError, match="No more available PCI slots on PCI segment 0"):
        slotmap.lowest_free(0)
    with pytest.raises(AllocationError, match=r"Attempted double use of PCI Address 0000:00:07\.0"):
        slotmap.reserve(PciAddress(0, 0, 7), "disk x")
    slotmap.release(PciAddress(0, 0, 7))
    slotmap.release(PciAddress(0, 0, 7))  # double release is a no-op
    assert slotmap.lowest_free(0) == PciAddress(0, 0, 7)


# ------------------------------------------------------------------- define
def test_define_order_default_domain() -> None:
    domain = template("domain-chv.xml")
    assign_at_define(domain)
    assert slots(domain) == {
        1: "rng:/dev/urandom",
        2: "interface:ethernet:52:54:00:e5:b8:01:tap1",
        3: f"disk:{NFS}/nixos.img:vda",
    }
    assert all(d.alias for d in domain.devices())
    assert free_slots([domain])[0] == 4


def test_define_order_rng_then_interfaces_then_disks_then_others() -> None:
    domain = Domain.from_xml(
        "<domain type='kvm'><name>t</name><devices>"
        "<disk type='file'><target dev='vda'/></disk>"
        "<filesystem type='mount'><source dir='/s'/><target dir='t'/></filesystem>"
        "<interface type='ethernet'><mac address='52:54:00:00:00:01'/></interface>"
        "<interface type='ethernet'><mac address='52:54:00:00:00:02'/>"
        "<address type='pci' slot='1'/></interface>"
        "<memballoon model='virtio'/>"
        "<disk type='file'><target dev='vdb'/></disk>"
        "<rng model='virtio'><backend model='random'>/dev/random</backend></rng>"
        "</devices></domain>"
    )
    assign_at_define(domain)
    assert {d.label: d.address.slot for d in domain.devices() if d.address} == {
        "interface 52:54:00:00:00:02": 1,
        "rng rng0": 2,
        "interface 52:54:00:00:00:01": 3,
        "disk vda": 4,
        "disk vdb": 5,
        "filesystem fs0": 6,
        "memballoon balloon0": 7,
    }


def test_define_is_idempotent() -> None:
    domain = template("domain-chv.xml")
    assign_at_define(domain)
    first = domain.to_xml()
    assign_at_define(domain)
    assert domain.to_xml() == first


def test_define_static_bdf_keeps_addresses() -> None:
    domain = template("domain-chv-static-bdf.xml")
    assign_at_define(domain)
    assert sorted(slots(domain)) == [1, 2, 5]


def test_define_a8_function_rejected_and_domain_unchanged() -> None:
    domain = template("domain-chv-static-bdf-with-function.xml")
    before = domain.to_xml()
    with pytest.raises(AddressError, match=r"device 'disk vda'.*0000:00:01\.1.*function must be 0"):
        assign_at_define(domain)
    assert domain.to_xml() == before


def test_define_duplicate_names_both_devices_and_unchanged() -> None:
    domain = template("domain-chv.xml")
    vda = domain.find(("disk", "vda"))
    assert vda is not None
    vda.set_address(PciAddress(0, 0, 2))
    before = domain.to_xml()
    with pytest.raises(AllocationError) as err:
        assign_at_define(domain)
    message = str(err.value)
    assert "0000:00:02.0" in message
    assert "disk vda" in message
    assert "interface 52:54:00:e5:b8:01" in message
    assert domain.to_xml() == before


@pytest.mark.parametrize(
    ("attrs", "rule"),
    [
        ("domain='1' slot='3'", "only PCI domain 0"),
        ("bus='1' slot='3'", "only PCI bus 0"),
        ("slot='3' multifunction='on'", "multifunction"),
    ],
)
def test_define_rejects_addresses_chv_cannot_honour(attrs: str, rule: str) -> None:
    domain = template("domain-chv.xml")
    xml = domain.to_xml().replace(
        "<target dev='vda' bus='virtio'/>",
        f"<target dev='vda' bus='virtio'/><address type='pci' {attrs}/>",
    )
    domain = Domain.from_xml(xml)
    before = domain.to_xml()
    with pytest.raises(AddressError, match=rule):
        assign_at_define(domain)
    assert domain.to_xml() == before


def test_define_more_segments_allows_domain_1() -> None:
    domain = Domain.from_xml(
        "<domain type='kvm'><name>t</name><devices><disk type='file'><target dev='vda'/>"
        "<address type='pci' domain='1' slot='1'/></disk></devices></domain>"
    )
    assign_at_define(domain, segments=2)
    assert domain.find(("disk", "vda")).address == PciAddress(1, 0, 1)  # type: ignore[union-attr]
    # the implicit rng goes to segment 0
    rng = domain.find(("rng", "implicit-rng-device"))
    assert rng is not None
    assert rng.address == PciAddress(0, 0, 1)


def test_define_full_bus_fails_unchanged() -> None:
    disks = "".join(f"<disk type='file'><target dev='vd{chr(97 + i)}'/></disk>" for i in range(26))
    more = "".join(f"<disk type='file'><target dev='vda{chr(97 + i)}'/></disk>" for i in range(6))
    domain = Domain.from_xml(
        f"<domain type='kvm'><name>t</name><devices>{disks}{more}</devices></domain>"
    )
    before = domain.to_xml()
    with pytest.raises(AllocationError, match="disk vdae: No more available PCI slots"):
        assign_at_define(domain)
    assert domain.to_xml() == before


def test_define_more_than_ten_auto_devices() -> None:
    """B9: many devices without addresses (the fork's heap bug) get consecutive slots."""
    disks = "".join(f"<disk type='file'><target dev='vd{chr(97 + i)}'/></disk>" for i in range(21))
    domain = Domain.from_xml(
        f"<domain type='kvm'><name>t</name><devices>{disks}</devices></domain>"
    )
    assign_at_define(domain)
    assert sorted(slots(domain)) == list(range(1, 23))
    assert check_no_duplicates(domain) == []


# ------------------------------------------------------------------ hotplug
def test_i3_static_bdf_hotplug_without_address() -> None:
    vm = Vm(template("domain-chv-static-bdf.xml"))
    got = [vm.attach(disk(t)).slot for t in ("vdb", "vdc", "vdd")]
    assert got == [3, 4, 6]


def test_hotplug_explicit_address_taken_is_double_use() -> None:
    vm = Vm(template("domain-chv.xml"))
    before = vm.live.to_xml()  # type: ignore[union-attr]
    with pytest.raises(AllocationError) as err:
        choose_hotplug_address(disk("vdb", "pci:0.0.02.0"), live=vm.live, persistent=vm.persistent)
    assert str(err.value).startswith("Attempted double use of PCI Address 0000:00:02.0")
    assert "disk vdb" in str(err.value)
    assert "interface 52:54:00:e5:b8:01" in str(err.value)
    assert vm.live.to_xml() == before  # type: ignore[union-attr]


def test_hotplug_explicit_address_free_is_used() -> None:
    vm = Vm(template("domain-chv.xml"))
    assert vm.attach(disk("vdb", "pci:0.0.17.0")) == PciAddress(0, 0, 0x17)


@pytest.mark.parametrize(
    ("address", "error"),
    [
        ("pci:0.0.20.0", "slot='0x20', must be <= 0x1F"),  # A7
        ("pci:0.0.1f.5", "function must be 0"),  # A8
        ("pci:1.0.05.0", "only PCI domain 0"),
    ],
)
def test_hotplug_invalid_explicit_addresses_change_nothing(address: str, error: str) -> None:
    vm = Vm(template("domain-chv.xml"))
    live_before, pers_before = vm.live.to_xml(), vm.persistent.to_xml()  # type: ignore[union-attr]
    with pytest.raises(AddressError, match=error):
        vm.attach(disk("vdb", address), config=True)
    assert (vm.live.to_xml(), vm.persistent.to_xml()) == (live_before, pers_before)  # type: ignore[union-attr]


def test_hotplug_lowest_free_in_both_definitions() -> None:
    vm = Vm(template("domain-chv.xml"))
    vm.attach(disk("vdb"), live=False, config=True)  # persistent only: 04
    assert vm.attach(disk("vdc")) == PciAddress(0, 0, 5)  # live only, skips PERS 04


def test_hotplug_same_device_keeps_its_address_from_other_definition() -> None:
    vm = Vm(template("domain-chv.xml"))
    vm.attach(disk("vdb"), config=True)  # 04 in both
    vm.attach(disk("vdc"), config=True)  # 05 in both
    vm.detach(("disk", "vdb"))  # live only: PERS keeps 04
    vm.detach(("disk", "vdc"))
    vm.attach(disk("vdd"))  # a new device may not take PERS-reserved 04/05: 06
    assert slots(vm.live)[6].endswith(":vdd")
    assert vm.attach(disk("vdc")) == PciAddress(0, 0, 5)  # re-attach: keeps its slot


def test_hotplug_same_device_slot_taken_fails() -> None:
    vm = Vm(template("domain-chv.xml"))
    vm.attach(disk("vdb"), config=True)  # 04
    vm.detach(("disk", "vdb"))  # live only
    vm.live.find(("disk", "vda")).set_address(PciAddress(0, 0, 4))  # type: ignore[union-attr]
    with pytest.raises(AllocationError, match=r"0000:00:04\.0 by disk vdb .*disk vda in the live"):
        choose_hotplug_address(disk("vdb"), live=vm.live, persistent=vm.persistent)


def test_hotplug_explicit_address_held_by_same_device_in_other_definition() -> None:
    """A2 step 4 style: re-attach with the address the persistent definition keeps."""
    vm = Vm(template("domain-chv.xml"))
    vm.attach(disk("vdb"), config=True)  # 04
    vm.detach(("disk", "vdb"))
    assert vm.attach(disk("vdb", "pci:0.0.04.0")) == PciAddress(0, 0, 4)
    with pytest.raises(AllocationError, match="double use"):
        choose_hotplug_address(disk("vdc", "pci:0.0.04.0"), live=vm.live, persistent=vm.persistent)


def test_hotplug_twin_with_different_addresses_is_refused() -> None:
    vm = Vm(template("domain-chv.xml"))
    vm.attach(disk("vdb", "pci:0.0.07.0"), live=False, config=True)
    vm.attach(disk("vdb", "pci:0.0.07.0"), live=True)
    # definitions that disagree (e.g. written by another tool): no address is guessed
    twin = vm.live.find(("disk", "vdb"))
    assert twin is not None
    twin.set_address(PciAddress(0, 0, 8))
    with pytest.raises(AllocationError, match="different PCI addresses"):
        choose_hotplug_address(disk("vdb"), live=vm.live, persistent=vm.persistent)


def test_explicit_address_must_match_the_twin_in_the_other_definition() -> None:
    vm = Vm(template("domain-chv.xml"))
    vm.attach(disk("vdb"), live=False, config=True)  # persistent 04
    with pytest.raises(AllocationError, match=r"is at 0000:00:04\.0 in the persistent"):
        choose_hotplug_address(disk("vdb", "pci:0.0.06.0"), live=vm.live, persistent=vm.persistent)
    same = choose_hotplug_address(
        disk("vdb", "pci:0.0.04.0"), live=vm.live, persistent=vm.persistent
    )
    assert same == PciAddress(0, 0, 4)


def test_saved_images_count_like_the_live_definition() -> None:
    vm = Vm(template("domain-chv.xml"))
    vm.attach(disk("vdc"), live=True)  # 04, live only
    vm.attach(disk("vdb"), live=True)  # 05, live only
    image = vm.live.copy()  # a managed save of that live definition
    # shut off: no live definition, but the image will be restored
    kept = choose_hotplug_address(disk("vdb"), live=None, persistent=vm.persistent, saved=[image])
    assert kept == PciAddress(0, 0, 5)  # the device keeps its slot in the image
    new = choose_hotplug_address(disk("vdd"), live=None, persistent=vm.persistent, saved=[image])
    assert new == PciAddress(0, 0, 6)  # 04 and 05 are the image's


def test_hotplug_full_bus() -> None:
    vm = Vm(template("domain-chv.xml"), persistent=False)
    for n in range(4, 32):
        vm.attach(disk(f"vd{chr(97 + n)}"))
    with pytest.raises(AllocationError, match="No more available PCI slots"):
        choose_hotplug_address(disk("vdzz"), live=vm.live, persistent=None)


def test_prepare_hotplug_does_not_modify_input() -> None:
    vm = Vm(template("domain-chv.xml"))
    device = nic()
    ready = prepare_hotplug(device, live=vm.live, persistent=vm.persistent)
    assert ready.address == PciAddress(0, 0, 4)
    assert device.address is None


# -------------------------------------------------------- catalogue sequences
def test_a1_transient_implicit_assignment_and_reuse() -> None:
    vm = Vm(template("domain-chv.xml"), persistent=False)
    vm.attach(nic("new_interface_explicit_bdf.xml"))
    vm.attach(disk("vdb"))
    vm.attach(disk("vdc"))
    assert {s: d.split(":")[0] for s, d in slots(vm.live).items()} == {
        1: "rng",
        2: "interface",
        3: "disk",
        4: "interface",
        5: "disk",
        6: "disk",
    }
    vm.detach(("disk", "vdb"))
    assert 5 not in slots(vm.live)
    assert vm.attach(disk("vdb")).slot == 5
    vm.detach(NIC_KEY)
    vm.detach(("disk", "vdb"))
    assert vm.attach(disk("vdb")).slot == 4
    assert sorted(slots(vm.live)) == [1, 2, 3, 4, 6]


def test_a2_explicit_assignment() -> None:
    vm = Vm(template("domain-chv-static-bdf.xml"), persistent=False)
    vm.attach(nic("new_interface_explicit_bdf.xml"))
    vm.attach(disk("vdb", "pci:0.0.17.0", source=f"{NFS}/cirros.img"))
    assert sorted(slots(vm.live)) == [1, 2, 4, 5, 0x17]
    vm.detach(NIC_KEY)
    vm.detach(("disk", "vdb"))
    assert vm.attach(disk("vdb", "pci:0.0.04.0")).slot == 4
    before = vm.live.to_xml()  # type: ignore[union-attr]
    with pytest.raises(AllocationError, match="double use"):
        vm.attach(nic("new_interface_explicit_bdf.xml"))
    assert vm.live.to_xml() == before  # type: ignore[union-attr]


def test_a3_implicit_bdfs_survive_destroy_start() -> None:
    vm = Vm(template("domain-chv.xml"))
    assert vm.attach(disk("vdb")).slot == 4  # transient
    assert vm.attach(nic(), config=True).slot == 5  # --persistent
    snapshot = {s: d for s, d in slots(vm.live).items() if s != 4}
    vm.detach(NIC_KEY)
    vm.detach(("disk", "vdb"))
    vm.restart()
    assert slots(vm.live) == snapshot
    assert 4 not in slots(vm.live)
    assert slots(vm.persistent)[5] == "interface:ethernet:52:54:00:e5:b8:02:tap2"


def test_a4_defs_in_sync_after_transient_unplug() -> None:
    vm = Vm(template("domain-chv.xml"))
    reference = set(slots(vm.persistent))
    assert vm.attach(disk("vdb"), config=True).slot == 4
    new = set(slots(vm.persistent)) - reference
    assert all(slots(vm.live)[s] == slots(vm.persistent)[s] for s in new)
    vm.detach(("disk", "vdb"))  # live only
    assert 4 not in slots(vm.live)
    assert slots(vm.persistent)[4] == f"disk:{NFS}/vdb.img:vdb"
    assert vm.attach(nic(), config=True).slot == 5
    new = set(slots(vm.persistent)) - reference
    in_both = {s for s in new if s in slots(vm.live)}
    assert in_both == {5}
    assert all(slots(vm.live)[s] == slots(vm.persistent)[s] for s in in_both)
    assert cross_conflicts(vm.live, vm.persistent) == []  # type: ignore[arg-type]


def test_a5_defs_in_sync_after_transient_hotplug() -> None:
    vm = Vm(template("domain-chv.xml"))
    assert vm.attach(disk("vdb")).slot == 4
    assert 4 not in slots(vm.persistent)
    reference = set(slots(vm.live))
    network = Device.from_xml(
        "<interface type='network'><mac address='DE:AD:BE:EF:13:37'/>"
        "<source network='libvirt-testnetwork'/><target dev='l33t_n37'/>"
        "<model type='virtio'/></interface>"
    )
    assert vm.attach(network, config=True).slot == 5
    assert vm.attach(disk("vdc"), config=True).slot == 6
    new = set(slots(vm.live)) - reference
    assert new == {5, 6}
    assert all(slots(vm.live)[s] == slots(vm.persistent)[s] for s in new)
    assert 4 not in slots(vm.persistent)


def test_fork_scenario_8_duplicate_cannot_happen() -> None:
    """libvirt-pci-rules 5.8: X --config (PERS 04), then Y --live --config."""
    vm = Vm(template("domain-chv.xml"))
    assert vm.attach(disk("vdb"), live=False, config=True).slot == 4
    assert vm.attach(nic(), config=True).slot == 5
    assert check_no_duplicates(vm.persistent) == []  # type: ignore[arg-type]
    assert cross_conflicts(vm.live, vm.persistent) == []  # type: ignore[arg-type]


def test_b8_removed_slot_reused_in_transient_domain() -> None:
    vm = Vm(template("domain-chv.xml"), persistent=False)
    assert vm.attach(nic()).slot == 4
    vm.detach(("interface", "52:54:00:e5:b8:01"))
    assert vm.attach(nic("new_interface_type_network.xml")).slot == 2


def test_b8_persistent_domain_keeps_slot_of_live_detached_nic() -> None:
    """B8 on a defined domain: the live-only detach keeps PERS's reservation of 02."""
    vm = Vm(template("domain-chv.xml"))
    assert vm.attach(nic()).slot == 4
    vm.detach(("interface", "52:54:00:e5:b8:01"))
    assert vm.attach(nic("new_interface_type_network.xml")).slot == 5
    vm.restart()
    assert slots(vm.live)[2] == "interface:ethernet:52:54:00:e5:b8:01:tap1"


def test_i4_virsh_slot_zero_rejected_but_all_zero_xml_is_auto() -> None:
    """I4: a virsh --address with slot 0 is refused; in XML all-zero means 'no address'."""
    with pytest.raises(AddressError, match="slot must be >= 1"):
        validate_for_chv(PciAddress.from_virsh("pci:0.0.00.0"), segments=1, device="disk vdb")
    vm = Vm(template("domain-chv.xml"))
    assert vm.attach(disk("vdb", "pci:0.0.00.0")).slot == 4


# -------------------------------------------------------------------- helpers
def test_check_no_duplicates_and_cross_conflicts() -> None:
    live = template("domain-chv.xml")
    assign_at_define(live)
    persistent = live.copy()
    vda = live.find(("disk", "vda"))
    assert vda is not None
    vda.set_address(PciAddress(0, 0, 2))
    dups = check_no_duplicates(live)
    assert len(dups) == 1
    assert dups[0].address == PciAddress(0, 0, 2)
    assert "disk vda" in str(dups[0]) and "interface 52:54:00:e5:b8:01" in str(dups[0])
    conflicts = cross_conflicts(live, persistent)
    assert [(c.first, c.second) for c in conflicts] == [("disk vda", "interface 52:54:00:e5:b8:01")]


def test_adopt_reported() -> None:
    domain = template("domain-chv.xml")
    domain.ensure_implicit_rng()
    domain.assign_aliases()
    changed = adopt_reported(
        domain,
        {
            "virtio-disk0": PciAddress.from_chv_bdf("0000:00:01.0"),
            "net0": PciAddress.from_chv_bdf("0000:00:02.0"),
            "implicit-rng-device": PciAddress.from_chv_bdf("0000:00:03.0"),
        },
    )
    assert [d.label for d in changed] == ["disk vda", "rng implicit-rng-device"]
    assert slots(domain)[1].endswith(":vda")
    before = domain.to_xml()
    with pytest.raises(AllocationError, match="clash"):
        adopt_reported(domain, {"net0": PciAddress(0, 0, 1)})
    assert domain.to_xml() == before
