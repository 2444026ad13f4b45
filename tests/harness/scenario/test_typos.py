"""Typos are caught before a run: ``bdf-harness validate`` and ``run`` (before anything
starts) refuse them with FILE:LINE and what is wrong, exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.scenario.schema import schema_available

ROOT = Path(__file__).resolve().parents[3]
DOMAIN = (ROOT / "scenarios" / "domains" / "domain-chv.xml").read_text()


def _scenario(tmp_path: Path, steps: str, documents: str = "") -> Path:
    (tmp_path / "domain.xml").write_text(DOMAIN)
    path = tmp_path / "typo.yaml"
    path.write_text(
        "name: typo\nsource: test\nprofiles: [v53]\ndocuments:\n"
        "  domain: {file: domain.xml}\n" + documents + "steps:\n"
        "  - run: define domain\n  - run: start testvm\n" + steps
    )
    return path


def _refused(path: Path, capsys: pytest.CaptureFixture[str], *words: str) -> None:
    for command in ("validate", "run"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert f"{path}:" in err and all(w in err for w in words), err
        assert "Traceback" not in err


def test_a_fault_on_an_endpoint_the_profile_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _scenario(tmp_path, "  - fault: {endpoint: vm.add-dsk}\n")
    _refused(path, capsys, "vm.add-dsk", "not an endpoint of CHV v53", "vm.add-disk")


def test_a_bad_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = "  - run: attach-disk testvm /a.img vdb --address pci:0.0.zz.0\n"
    _refused(_scenario(tmp_path, bad), capsys, "pci:0.0.zz.0", "not a hexadecimal")
    out_of_range = "  - run: attach-disk testvm /a.img vdb --address pci:0.0.20.0\n"
    _refused(_scenario(tmp_path, out_of_range), capsys, "pci:0.0.20.0")
    # a fail: step may give an address out of range: its refusal is what it tests
    ok = "  - fail: attach-disk testvm /a.img vdb --address pci:0.0.20.0\n"
    assert main(["validate", str(_scenario(tmp_path, ok))]) == 0


def test_a_document_that_is_not_xml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _scenario(
        tmp_path,
        "  - run: attach-device testvm nic --live\n",
        "  nic: \"<interface type='ethernet'><model type='virtio'/>\"\n",
    )
    _refused(path, capsys, "document 'nic'", "is not XML")


@pytest.mark.skipif(not schema_available(), reason="virt-xml-validate is not installed")
def test_a_document_libvirts_schema_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _scenario(
        tmp_path,
        "  - run: attach-device testvm nic --live\n",
        "  nic: \"<interface type='ethernet'><mac address='zz'/><model type='virtio'/>"
        '</interface>"\n',
    )
    _refused(path, capsys, "document 'nic'", "libvirt's schema")


def test_no_scenario_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("validate", "run", "list"):
        assert main([command, str(tmp_path)]) == 2
        assert f"no scenario files (*.yaml) in {tmp_path}" in capsys.readouterr().err
