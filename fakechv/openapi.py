"""The official CHV OpenAPI specs, read from the shared reference directory.

The specs (``chv-openapi-v51.0.yaml`` ...) live beside the project in
``../shared/reference/``; they are read, never copied. fakechv reads them to know each
release's fields and defaults, and :mod:`harness.chv.spec` to check exchanges against them.

Where to find them, in order: ``$CHV_REFERENCE_DIR``; ``shared/reference`` beside the
source checkout this module was loaded from; ``shared/reference`` beside the current
directory or any of its parents (a tox or pip install runs from the checkout).

Parsing a spec's YAML takes longer than the rest of a run's set-up: each parsed file
is kept in ``$XDG_CACHE_HOME/bdf-harness/specs`` (default ``~/.cache``), named by the
hash of the file's bytes and the versions of Python and PyYAML, so an edited spec is
parsed afresh (:mod:`fakechv.filecache`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml

from fakechv import filecache
from fakechv.profiles import PROFILES, get_profile

#: libyaml's safe loader where PyYAML has it (ten times faster), else PyYAML's own
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = [
    "PROFILE_SPECS",
    "REFERENCE_ENV",
    "SOURCE_CORRECTIONS",
    "load_spec",
    "reference_dir",
]

REFERENCE_ENV = "CHV_REFERENCE_DIR"

#: Which official spec describes each fakechv profile (``Profile.spec``).
PROFILE_SPECS: dict[str, str] = {name: p.spec for name, p in PROFILES.items()}


def _candidates() -> list[Path]:
    here = Path(__file__).resolve()
    cwd = Path.cwd().resolve()
    return [here.parents[1].parent / "shared" / "reference"] + [
        d.parent / "shared" / "reference" for d in (cwd, *cwd.parents)
    ]


def reference_dir() -> Path:
    """The shared reference directory holding the specs (see the module doc)."""
    env = os.environ.get(REFERENCE_ENV)
    if env:
        return Path(env)
    candidates = _candidates()
    for candidate in candidates:
        if (candidate / get_profile().spec).is_file():
            return candidate
    return candidates[0]


def _spec_file(profile: str) -> Path:
    try:
        name = PROFILE_SPECS[profile]
    except KeyError:
        known = ", ".join(PROFILE_SPECS)
        raise ValueError(f"unknown CHV profile {profile!r} (known: {known})") from None
    path = reference_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"CHV API spec {path} not found; set CHV_REFERENCE_DIR to the directory "
            "holding chv-openapi-v5x.0.yaml"
        )
    return path


@functools.cache
def load_spec(profile: str) -> dict[str, Any]:
    """The parsed OpenAPI document for ``profile`` (cached), with the corrections of
    :data:`SOURCE_CORRECTIONS` applied."""
    doc = _parse(_spec_file(profile))
    if not isinstance(doc, dict) or "paths" not in doc:
        raise ValueError(f"{_spec_file(profile)} is not an OpenAPI document")
    paths = doc["paths"]
    if "/vmm.nmi" in paths and "/vm.nmi" not in paths:
        paths["/vm.nmi"] = paths.pop("/vmm.nmi")
    schemas = doc.get("components", {}).get("schemas", {})
    vm_config = schemas.get("VmConfig", {})
    if "payload" in vm_config.get("required", []):
        vm_config["required"] = [r for r in vm_config["required"] if r != "payload"]
    _source_enums(profile, schemas)
    _wire_names(profile, schemas)
    return doc


def _parse(path: Path) -> Any:
    """The YAML document in ``path``: a fresh object on every call, kept in the user's
    cache by the file's bytes and PyYAML's version (:mod:`fakechv.filecache`)."""
    data = path.read_bytes()
    return filecache.kept(
        "specs",
        data,
        f"yaml{yaml.__version__}",
        lambda: yaml.load(data.decode("utf-8"), Loader=_YAML_LOADER),
    )


def _wire_names(profile: str, schemas: dict[str, Any]) -> None:
    """A fork that renames a field on the wire (the Cyberus fork's ``bdf_device`` for
    ``pci_device_id``, :data:`fakechv.configtypes.WIRE_NAMES`) takes either name in a
    request and writes its own in ``vm.info``: its spec has both."""
    from fakechv.configtypes import WIRE_NAMES

    renames = WIRE_NAMES.get(PROFILES[profile].config_types, {}) if profile in PROFILES else {}
    for schema in schemas.values():
        props = schema.get("properties") if isinstance(schema, dict) else None
        if not isinstance(props, dict):
            continue
        for upstream, wire in renames.items():
            if upstream in props and wire not in props:
                props[wire] = props[upstream]


def _source_enums(profile: str, schemas: dict[str, Any]) -> None:
    """Give every enum of the spec the variants the release's source has
    (:mod:`fakechv.configtypes`): the v51 spec's ImageType lacks ``Unknown``, which
    is the serde default CHV reports for every disk."""
    from fakechv.configtypes import RELEASES
    from fakechv.typemodel import EnumDef, StructDef

    defs = RELEASES.get(PROFILES[profile].config_types, {}) if profile in PROFILES else {}
    for name, schema in schemas.items():
        d = defs.get(name)
        if isinstance(d, EnumDef) and isinstance(schema, dict) and "enum" in schema:
            schema["enum"] = list(d.variants)
        if not isinstance(d, StructDef) or not isinstance(schema, dict):
            continue
        props = schema.get("properties") or {}
        for f in d.fields:
            prop = props.get(f.name)
            enum = defs.get(f.rust.removeprefix("Option<").removesuffix(">"))
            if isinstance(prop, dict) and isinstance(enum, EnumDef):
                if "enum" in prop or str(prop.get("type", "")).startswith("enum"):
                    props[f.name] = {"type": "string", "enum": list(enum.variants)}


#: Where the official specs disagree with CHV's source, the source wins (what a real
#: CHV sends and accepts); :func:`load_spec` applies these corrections.
SOURCE_CORRECTIONS: tuple[str, ...] = (
    "v51/v52 specs list /vmm.nmi; the HTTP router registers /vm.nmi "
    "(vmm/src/api/http/mod.rs at v51.0 and v52.0)",
    "VmConfig.payload is marked required; it is an Option in VmConfig "
    "(vmm/src/vm_config.rs): vm.create accepts a config without it and vm.boot fails",
    "enums take the source's variants (fakechv.configtypes): the v51 spec's ImageType "
    "lacks Unknown, the serde default every disk reports",
)
