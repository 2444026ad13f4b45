"""copy_json is deepcopy for JSON values: equal, and sharing no container with the source;
the checkpoint's copies of the device manager and the device tree."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakechv.jsoncopy import copy_json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


def _containers(value: Any) -> list[int]:
    if isinstance(value, dict):
        return [id(value), *(i for v in value.values() for i in _containers(v))]
    if isinstance(value, list):
        return [id(value), *(i for v in value for i in _containers(v))]
    return []


@given(JSON)
def test_a_copy_equals_the_value_and_shares_no_container(value: Any) -> None:
    copied = copy_json(value)
    assert copied == value == copy.deepcopy(value)
    assert not set(_containers(copied)) & set(_containers(value))


def test_other_objects_inside_are_deep_copied() -> None:
    inner = {"a": [1]}
    value = {"t": (inner, 2), "s": {3}}
    copied = copy_json(value)
    assert copied == value
    assert copied["t"][0] is not inner and copied["s"] is not value["s"]


def test_a_device_tree_node_copies_every_field_and_shares_no_list() -> None:
    from dataclasses import fields

    from fakechv.devicetree import DeviceNode

    node = DeviceNode(
        id="_disk0",
        resources=[{"PciBar": {"index": 0, "base": 1}}],
        parent="_pci0",
        children=["x"],
        pci_bdf="0000:00:05.0",
    )
    assert all(getattr(node, f.name) != f.default for f in fields(DeviceNode))
    copied = copy.deepcopy(node)
    assert copied == node
    assert copied.resources is not node.resources and copied.children is not node.children
    assert copied.resources[0] is not node.resources[0]


def test_a_node_held_twice_is_copied_once() -> None:
    from fakechv.devicetree import DeviceNode

    node = DeviceNode(id="_net0")
    pair = copy.deepcopy([node, node])
    assert pair[0] is pair[1] and pair[0] is not node


def _vmm_state(vmm: Any) -> tuple[Any, ...]:
    devices = vmm.vm.devices
    return (
        json.dumps(vmm.info()),
        vmm.pending_ejects(),
        [segment.snapshot() for segment in devices.topology.segments],
        dict(devices.kinds),
        devices.device_id_cnt,
        sorted(devices.images),
        dict(vmm.net_fds),
        vmm.vm.generation,
    )


def test_a_rollback_restores_every_part_of_the_checkpoint() -> None:
    """The checkpoint copies the device manager field by field: after changes to each
    field, a rollback gives back exactly the state of the checkpoint."""
    from fakechv.profiles import get_profile
    from fakechv.vmm import EjectPolicy, Vmm

    vmm = Vmm(get_profile("v53"), eject=EjectPolicy("never"))
    vmm.create(
        {
            "payload": {"kernel": "/boot/vmlinux"},
            "platform": {"num_pci_segments": 2},
            "disks": [{"path": "/a"}, {"path": "/b", "pci_segment": 1}],
            "net": [{"id": "net7"}],
        }
    )
    vmm.boot()
    vmm.remove_device("_disk0")  # pending: the guest never ejects
    before = _vmm_state(vmm)
    images = dict(vmm.vm.devices.images)
    saved = vmm.checkpoint()
    vmm.add_device("disk", {"path": "/c"})
    vmm.add_device("disk", {"path": "/d", "pci_segment": 1, "pci_device_id": 9})
    vmm.remove_device("_disk1")
    vmm.add_device("net", {"id": "net8"})
    assert _vmm_state(vmm) != before
    vmm.rollback(saved)
    assert _vmm_state(vmm) == before
    # an open image is the same object (an open file), not a copy
    assert all(vmm.vm.devices.images[k] is v for k, v in images.items())


def test_a_device_manager_with_an_unknown_field_is_not_copied() -> None:
    """A field added to the manager must be added to its copy too, or the checkpoint
    would share it."""
    from fakechv.device_manager import DeviceManager
    from fakechv.profiles import get_profile

    manager = DeviceManager(get_profile("v53"), 1, boot_ids=set())
    copy.deepcopy(manager)
    manager.extra = []  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match="misses"):
        copy.deepcopy(manager)


def test_a_value_marshal_does_not_take_is_copied_item_by_item() -> None:
    class Name(str):
        pass

    class Thing:
        def __init__(self) -> None:
            self.items = [1]

    value = {"name": Name("x"), "things": [Thing()], "plain": {"a": [1, 2]}}
    copied = copy_json(value)
    assert copied["name"] == "x" and copied["plain"] == {"a": [1, 2]}
    assert copied["plain"]["a"] is not value["plain"]["a"]
    assert copied["things"][0] is not value["things"][0]
    assert copied["things"][0].items == [1]
