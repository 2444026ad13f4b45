"""libvirt's schema for the documents a scenario gives libvirt in ``run:`` steps.

A document a ``run:`` step defines, creates, attaches or detaches must be one libvirt
accepts: :func:`schema_problems` runs libvirt's own RelaxNG schema over each (through
``virt-xml-validate``, :mod:`harness.model.virtxml`), a device document inside a minimal
domain. ``fail:`` steps are left alone: a document the driver must refuse may well be
one the schema refuses too. Each distinct text is checked once per process.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from pathlib import Path

from harness.errors import DomainError
from harness.model.virsh import FILE_ARGUMENTS
from harness.model.virtxml import (
    VIRT_XML_VALIDATE,
    have_virt_xml_validate,
    validate_domain_xml,
)
from harness.scenario.model import Scenario, ScenarioError

__all__ = ["schema_available", "schema_problems"]

_DEVICE_COMMANDS = ("attach-device", "detach-device")

_WRAPPER = """<domain type='kvm'>
  <name>schema-check</name>
  <memory unit='KiB'>262144</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
{device}
  </devices>
</domain>
"""


def schema_available() -> bool:
    """Whether libvirt's tools for the check are installed (``libvirt-clients``)."""
    return have_virt_xml_validate()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bdf-harness" / "schema-ok"


@functools.lru_cache(maxsize=1)
def _schema_stamp() -> str:
    """Changes when libvirt's schemas do (a new libvirt-clients)."""
    stamps = []
    for root in (Path("/usr/share/libvirt/schemas"), Path(VIRT_XML_VALIDATE)):
        try:
            stamps.append(f"{root}:{root.stat().st_mtime_ns}")
        except OSError:
            stamps.append(f"{root}:-")
    return ";".join(stamps)


@functools.lru_cache(maxsize=512)
def _problem(text: str, device: bool, source: str) -> str | None:
    """libvirt's complaint about a document, or None; a document found valid is
    remembered on disk (by its text and the schemas' version), so runs skip it."""
    document = _WRAPPER.format(device=text) if device else text
    key = hashlib.sha256(f"{_schema_stamp()}\0{document}".encode()).hexdigest()
    marker = _cache_dir() / key
    if marker.exists():
        return None
    try:
        validate_domain_xml(document, source=source)
    except DomainError as exc:
        return str(exc)
    with contextlib.suppress(OSError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return None


def schema_problems(scenario: Scenario) -> list[str]:
    """``FILE:LINE: ...`` for each document of a ``run:`` step libvirt's schema refuses."""
    out = []
    for step in scenario.steps:
        if step.kind != "run" or step.command is None:
            continue
        for arg in FILE_ARGUMENTS.get(step.command.name, ()):
            ref = step.command.args.get(arg)
            if not isinstance(ref, str):
                continue
            try:
                doc = scenario.document(ref)
            except ScenarioError as exc:
                out.append(str(exc))
                continue
            problem = _problem(doc.text, step.command.name in _DEVICE_COMMANDS, doc.source)
            if problem:
                first = problem.splitlines()
                detail = "; ".join(line.strip() for line in first[1:4]) or first[0]
                out.append(
                    f"{scenario.path}:{step.line}: document {ref!r} is not valid libvirt "
                    f"XML (libvirt's schema): {detail}"
                )
    return out
