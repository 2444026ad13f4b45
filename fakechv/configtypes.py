"""The Rust types CHV reads and writes its VmConfig with, per release.

CHV's official OpenAPI spec is not the whole truth about its configuration: the
source (``vmm/src/vm_config.rs``) has fields the spec does not list, other
integer widths, defaults the spec does not give, flattened structs and aliases.
The tables of :data:`RELEASES` describe those types as serde sees them, release by
release, so that fakechv refuses what CHV refuses (with serde's message) and reports
in ``vm.info`` what CHV reports, in CHV's field order.

The tables are written in the vocabulary of :mod:`fakechv.typemodel` (``S``, ``F``,
``E``) and read and written through its :class:`~fakechv.typemodel.TypeModel`
(:func:`model`). v53.0 is written out (:mod:`fakechv.configtypes_v53`); the others
are patches (:func:`fakechv.typemodel.release`): v52.0 of v53.0
(:mod:`fakechv.configtypes_v52`), v51.0 of v52.0 (:mod:`fakechv.configtypes_v51`),
HEAD of v53.0 (:mod:`fakechv.configtypes_head`). Every entry cites the source line it
was read from; types whose Deserialize is hand-written are described by their closest
plain type and listed under CUSTOM (in :mod:`fakechv.typemodel`).
"""

from __future__ import annotations

import functools

from fakechv.configtypes_cyberus import CYBERUS
from fakechv.configtypes_cyberus import WIRE_NAMES as _CYBERUS_WIRE
from fakechv.configtypes_head import HEAD
from fakechv.configtypes_v51 import V51
from fakechv.configtypes_v52 import V52
from fakechv.configtypes_v53 import V53
from fakechv.typemodel import TypeDef, TypeModel

__all__ = ["RELEASES", "WIRE_NAMES", "model"]

#: release name -> type definitions (fakechv profile names)
RELEASES: dict[str, dict[str, TypeDef]] = {
    "v51": V51,
    "v52": V52,
    "v53": V53,
    "head": HEAD,
    "cyberus": CYBERUS,
}

#: release name -> {fakechv's name of a field: the release's name on the wire}
WIRE_NAMES: dict[str, dict[str, str]] = {"cyberus": _CYBERUS_WIRE}


@functools.cache
def model(release_name: str) -> TypeModel:
    """The type model of a fakechv profile's release."""
    return TypeModel(RELEASES[release_name])
