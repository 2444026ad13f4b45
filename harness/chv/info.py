"""What the driver reads from CHV's ``vm.info``: where each PCI device sits.

A virtio device's BDF is on its ``_virtio-pci-<id>`` node of the device tree (the
child node ``<id>`` has none); VFIO and the other single-node devices carry it on their
own node. The ``_virtio-pci-`` prefix is CHV's (vmm/src/device_manager.rs).
"""

from __future__ import annotations

__all__ = ["VIRTIO_NODE_PREFIX", "chv_bdfs", "device_tree"]

#: the device-tree node CHV makes for a virtio device's PCI transport
VIRTIO_NODE_PREFIX = "_virtio-pci-"


def device_tree(info: dict[str, object]) -> dict[str, object]:
    """vm.info's ``device_tree`` (empty before boot)."""
    tree = info.get("device_tree")
    return tree if isinstance(tree, dict) else {}


def chv_bdfs(info: dict[str, object]) -> dict[str, str]:
    """CHV's PCI devices from ``vm.info``: device id -> BDF string.

    A virtio device's BDF sits on its ``_virtio-pci-<id>`` node; VFIO and other
    single-node devices carry it on their own node.
    """
    out: dict[str, str] = {}
    for node_id, node in device_tree(info).items():
        if not isinstance(node, dict):
            continue
        bdf = node.get("pci_bdf")
        if not isinstance(bdf, str):
            continue
        prefix = VIRTIO_NODE_PREFIX
        device_id = node_id[len(prefix) :] if node_id.startswith(prefix) else node_id
        out[device_id] = bdf
    return out
