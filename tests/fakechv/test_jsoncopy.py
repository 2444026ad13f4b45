"""copy_json is deepcopy for JSON values: equal, and sharing no container with the source."""

from __future__ import annotations

import copy
from typing import Any

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
