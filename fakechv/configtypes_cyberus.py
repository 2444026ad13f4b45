"""The VmConfig types of the Cyberus Technology fork of CHV (cyberus-technology/
cloud-hypervisor, its PR #32 on top of v52.0), as a patch of v52.0's
(:mod:`fakechv.configtypes_v52`).

The one change: ``PciDeviceCommonConfig.pci_device_id`` is
``#[serde(default, alias = "pci_device_id", rename = "bdf_device")]``
(vmm/src/vm_config.rs of the fork): a request may name it either way, ``vm.info``
writes ``bdf_device``, and both names in one object are serde's ``duplicate field
`bdf_device```. fakechv keeps the field as ``pci_device_id`` inside (the device
manager reads it so) and writes the wire name (:data:`WIRE_NAMES`)."""

from __future__ import annotations

import dataclasses

from fakechv.configtypes_v52 import V52
from fakechv.typemodel import FieldDef, StructDef, TypeDef, release

__all__ = ["CYBERUS", "WIRE_NAMES"]

#: the fork's name on the wire of a field fakechv keeps under the upstream name
WIRE_NAMES = {"pci_device_id": "bdf_device"}


def _renamed(struct: TypeDef) -> StructDef:
    assert isinstance(struct, StructDef)
    fields: list[FieldDef] = []
    for f in struct.fields:
        if f.name == "pci_device_id":
            f = dataclasses.replace(f, name="bdf_device", alias=("pci_device_id",))
        fields.append(f)
    return dataclasses.replace(struct, fields=tuple(fields))


CYBERUS: dict[str, TypeDef] = release(V52, replace=[_renamed(V52["PciDeviceCommonConfig"])])
