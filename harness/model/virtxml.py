"""Validate domain XML against libvirt's RelaxNG schema with ``virt-xml-validate``.

``virt-xml-validate`` comes with Debian's ``libvirt-clients`` package and needs ``xmllint``
(``libxml2-utils``). :func:`have_virt_xml_validate` says whether both are usable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from harness.errors import DomainError

__all__ = ["VIRT_XML_VALIDATE", "have_virt_xml_validate", "validate_domain_xml"]

VIRT_XML_VALIDATE = "/usr/bin/virt-xml-validate"


def _tool() -> str | None:
    if os.access(VIRT_XML_VALIDATE, os.X_OK):
        return VIRT_XML_VALIDATE
    return shutil.which("virt-xml-validate")


def have_virt_xml_validate() -> bool:
    """True if ``virt-xml-validate`` and the ``xmllint`` it runs are installed."""
    return _tool() is not None and shutil.which("xmllint") is not None


def validate_domain_xml(text: str, *, source: str = "<string>") -> None:
    """Run ``virt-xml-validate FILE domain``; DomainError with its output on failure."""
    tool = _tool()
    if tool is None or shutil.which("xmllint") is None:
        raise DomainError(
            f"{source}: cannot validate domain XML: virt-xml-validate (package libvirt-clients) "
            "or xmllint (package libxml2-utils) is not installed"
        )
    with tempfile.TemporaryDirectory(prefix="virtxml-") as tmp:
        path = os.path.join(tmp, "domain.xml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            result = subprocess.run(
                [tool, path, "domain"],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DomainError(f"{source}: cannot run virt-xml-validate: {exc}") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).replace(path, source).strip()
        raise DomainError(f"{source}: domain XML does not validate:\n{output}")
