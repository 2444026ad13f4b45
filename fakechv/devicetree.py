"""CHV's device tree (vmm/src/device_tree.rs) in its exact JSON shape.

A virtio device ``<id>`` gives two nodes: the transport ``_virtio-pci-<id>``
(with ``pci_bdf``, the PciBar ``resources`` and ``children: [<id>]``) and the
device ``<id>`` (``parent: "_virtio-pci-<id>"``, no ``pci_bdf``). VFIO, vfio-user,
pvpanic and ivshmem are a single node with ``pci_bdf``. Non-PCI nodes
(``__ioapic``, ``__serial``) have none. Unset ``Option`` fields are ``null`` up
to v52 and omitted from v53 (``serde_with::skip_serializing_none``, added to
DeviceNode in v53.0). Removed devices stay in the tree until the guest ejects.
"""

from __future__ import annotations

import marshal
import operator
from dataclasses import dataclass, field, fields
from typing import Any

from fakechv.jsoncopy import copy_json
from fakechv.pci import parse_bdf
from fakechv.profiles import Profile

__all__ = ["DeviceNode", "DeviceTree", "bar_resources", "virtio_node_id"]

VIRTIO_PCI_PREFIX = "_virtio-pci-"


def virtio_node_id(device_id: str) -> str:
    return f"{VIRTIO_PCI_PREFIX}{device_id}"


def bar_resources(bdf: str, *, virtio: bool = True, bar64: bool = True) -> list[dict[str, Any]]:
    """Plausible, deterministic PciBar resources for the device at ``bdf``. A virtio
    device's BAR is 64-bit except a cold-plugged block device's on segment 0
    (``use_64bit_bar_for_virtio_device``, vmm/src/device_manager.rs@v53.0:1217)."""
    seg, slot = parse_bdf(bdf)
    base = (1 << 40) + (seg << 32) + (slot << 20) if bar64 else 0xE800_0000 - (slot << 19)
    if virtio:
        return [
            {
                "PciBar": {
                    "index": 0,
                    "base": base,
                    "size": 0x80000,
                    "type_": "Mmio64" if bar64 else "Mmio32",
                    "prefetchable": False,
                }
            }
        ]
    return [
        {
            "PciBar": {
                "index": 0,
                "base": 0xC000_0000 + (seg << 24) + (slot << 16),
                "size": 0x1000,
                "type_": "Mmio32",
                "prefetchable": False,
            }
        }
    ]


@dataclass
class DeviceNode:
    id: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    parent: str | None = None
    children: list[str] = field(default_factory=list)
    pci_bdf: str | None = None

    def state(self) -> dict[str, Any]:
        """Every field, as JSON (a copy: the node's lists are not shared)."""
        return {name: copy_json(getattr(self, name)) for name in _NODE_FIELDS}

    def __deepcopy__(self, memo: dict[int, Any]) -> DeviceNode:
        # every field is a JSON value: copy_json is several times faster than deepcopy
        copied = DeviceNode(**self.state())
        memo[id(self)] = copied  # a node held twice in the copied graph stays one node
        return copied

    def to_json(self, profile: Profile) -> dict[str, Any]:
        """The node in ``vm.info``: unset fields ``null`` or left out, as the release does.

        It shares the node's lists (``vm.info`` encodes it at once): read it, never
        change it."""
        if profile.null_unset:
            return {name: getattr(self, name) for name in _NODE_FIELDS}
        return {name: value for name in _NODE_FIELDS if (value := getattr(self, name)) is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeviceNode:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise ValueError(f"device tree node without an id: {data!r}")
        return cls(
            id=data["id"],
            resources=copy_json(list(data.get("resources") or [])),
            parent=data.get("parent"),
            children=list(data.get("children") or []),
            pci_bdf=data.get("pci_bdf"),
        )


_NODE_FIELDS = tuple(f.name for f in fields(DeviceNode))
#: a node's fields as a tuple, in the order DeviceNode takes them
_node_fields = operator.attrgetter(*_NODE_FIELDS)


@dataclass
class DeviceTree:
    nodes: dict[str, DeviceNode] = field(default_factory=dict)

    def __deepcopy__(self, memo: dict[int, Any]) -> DeviceTree:
        # every request that may fail copies the tree (a checkpoint): the fields of all
        # nodes go through marshal (a deep copy of plain values, in C) in one piece; a
        # node copied already stays one node
        nodes = [n for n in self.nodes.values() if id(n) not in memo]
        try:
            fields = marshal.loads(marshal.dumps([_node_fields(n) for n in nodes]))
        except ValueError:  # a value marshal does not take: node by node
            fields = [tuple(n.state().values()) for n in nodes]
        for node, values in zip(nodes, fields, strict=True):
            memo[id(node)] = DeviceNode(*values)
        copied = DeviceTree({k: memo[id(n)] for k, n in self.nodes.items()})
        memo[id(self)] = copied
        return copied

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    def get(self, node_id: str) -> DeviceNode | None:
        return self.nodes.get(node_id)

    def add_plain(self, node_id: str) -> None:
        """A non-PCI node."""
        self.nodes[node_id] = DeviceNode(node_id)

    def add_pci(self, device_id: str, bdf: str, *, virtio: bool, bar64: bool = True) -> None:
        if virtio:
            parent = virtio_node_id(device_id)
            bars = bar_resources(bdf, bar64=bar64)
            self.nodes[parent] = DeviceNode(parent, bars, None, [device_id], bdf)
            self.nodes[device_id] = DeviceNode(device_id, [], parent, [], None)
        else:
            self.nodes[device_id] = DeviceNode(
                device_id, bar_resources(bdf, virtio=False), None, [], bdf
            )

    def pci_node_of(self, device_id: str) -> DeviceNode | None:
        """The node holding the BDF of device ``device_id`` (itself or its parent)."""
        node = self.nodes.get(device_id)
        if node is None:
            return None
        if node.pci_bdf is not None:
            return node
        if node.parent is not None:
            return self.nodes.get(node.parent)
        return None

    def bdf_of(self, device_id: str) -> str | None:
        node = self.pci_node_of(device_id)
        return node.pci_bdf if node is not None else None

    def remove_device(self, device_id: str) -> None:
        """Drop the device's nodes (at eject)."""
        node = self.nodes.get(device_id)
        if node is None:
            return
        if node.parent is not None:
            self.nodes.pop(node.parent, None)
        self.nodes.pop(device_id, None)

    def to_json(self, profile: Profile) -> dict[str, Any]:
        return {k: n.to_json(profile) for k, n in self.nodes.items()}

    def state(self) -> dict[str, Any]:
        """Profile-independent form for snapshots and migration (all fields)."""
        return {k: n.state() for k, n in self.nodes.items()}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> DeviceTree:
        if not isinstance(data, dict):
            raise ValueError("device tree must be a JSON object")
        return cls({str(k): DeviceNode.from_json(v) for k, v in data.items()})
