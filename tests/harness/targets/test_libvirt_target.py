"""The ``libvirt`` target: stock libvirt 11.3's CH driver with fakechv as its hypervisor.

The first tests need no libvirt. The others need the build of tools/build-libvirt.sh
(``tox -e libvirt`` makes it) and root; without them they are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.model.domain import Domain
from harness.reports.conformance import conformance_markdown
from harness.scenario.batch import run_paths
from harness.scenario.results import (
    FAILED,
    PASSED,
    UNSUPPORTED,
    RunResult,
    ScenarioResult,
    StepResult,
)
from harness.targets.base import OperationFailed, UnsupportedOperation
from harness.targets.libvirt import (
    LIBVIRT_VERSION,
    LibvirtDaemon,
    LibvirtHost,
    LibvirtTarget,
    _prepare_xml,
    chv_owner_ids,
    live_vs_chv,
    parse_definition,
    start_path,
    unavailable_reason,
)
from harness.targets.libvirtd import NO_SUPPORT

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DOMAIN = (ROOT / "scenarios" / "domains" / "domain-chv.xml").read_text()
BASELINE = ROOT / "docs" / "libvirt-11.3-conformance.md"
REASON = unavailable_reason()
#: under ``tox -e libvirt`` (which sets LIBVIRT_CONFORMANCE) libvirt must be there: no skip
needs_libvirt = pytest.mark.skipif(
    REASON is not None and not os.environ.get("LIBVIRT_CONFORMANCE"),
    reason=f"libvirt target: {REASON}",
)


# --------------------------------------------------------------------------- without libvirt
def test_prepare_xml_drops_emulator_and_finds_unmanaged_taps() -> None:
    text, taps = _prepare_xml(DEFAULT_DOMAIN)
    assert "<emulator>" not in text
    assert taps == ["tap1"]
    dom = Domain.from_xml(text)
    assert [d.label for d in dom.devices()] == ["disk vda", "interface 52:54:00:e5:b8:01"]
    nic = "<interface type='ethernet'><target dev='tap7'/><model type='virtio'/></interface>"
    assert _prepare_xml(nic)[1] == []  # managed: libvirt creates it itself


def _info(bdfs: dict[str, str]) -> dict[str, Any]:
    tree = {
        f"_virtio-pci-{cid}": {"id": f"_virtio-pci-{cid}", "pci_bdf": b} for cid, b in bdfs.items()
    }
    return {
        "config": {
            "disks": [
                {"path": "/var/lib/libvirt/storage-pools/nfs-share/nixos.img", "id": "_disk0"}
            ],
            "net": [{"mac": "52:54:00:E5:B8:01", "id": "net_0"}],
            "rng": {"src": "/dev/urandom", "id": "__rng"},
        },
        "device_tree": tree,
    }


def test_chv_devices_matched_by_path_and_mac() -> None:
    live = Domain.from_xml(_prepare_xml(DEFAULT_DOMAIN)[0])
    info = _info({"__console": "0000:00:01.0", "_disk0": "0000:00:02.0", "net_0": "0000:00:03.0"})
    owners = chv_owner_ids(live, info)
    assert owners == {
        "_disk0": ("disk vda", "disk"),
        "net_0": ("interface 52:54:00:e5:b8:01", "interface"),
    }


def test_live_vs_chv_names_device_side_and_bdfs() -> None:
    live = Domain.from_xml(_prepare_xml(DEFAULT_DOMAIN)[0])
    info = _info({"__console": "0000:00:01.0", "_disk0": "0000:00:02.0", "net_0": "0000:00:03.0"})
    found = {(v.rule, v.device, v.expected, v.actual) for v in live_vs_chv(live, info)}
    assert found == {
        ("live-vs-chv", "interface 52:54:00:e5:b8:01", "0000:00:02.0", "0000:00:03.0"),
        ("chv-extra", "CHV device __console", None, "0000:00:01.0"),
    }
    agree = _info({"_disk0": "0000:00:03.0", "net_0": "0000:00:02.0"})
    assert live_vs_chv(live, agree) == []  # vda has no address: check_unaddressed says so


def test_parse_definition_drops_non_pci_addresses() -> None:
    xml = DEFAULT_DOMAIN.replace(
        "<target dev='vda' bus='virtio'/>",
        "<target dev='vda' bus='virtio'/><address type='drive' controller='0' unit='1'/>",
    )
    with pytest.raises(Exception, match="drive"):
        Domain.from_xml(xml)
    dom = parse_definition(xml, "testvm live")
    vda = next(d for d in dom.devices() if d.label == "disk vda")
    assert vda.address is None
    assert [str(d.address) for d in dom.devices() if d.address] != []


def test_unavailable_reason_names_the_build_script(tmp_path: Path) -> None:
    reason = unavailable_reason(tmp_path)
    assert reason is not None and "tools/build-libvirt.sh" in reason and str(tmp_path) in reason


def test_unavailable_reason_names_a_build_made_for_another_prefix(tmp_path: Path) -> None:
    """libvirt compiles its paths in: a copied build would run against the original
    prefix's directories, outside the target's namespaces."""
    (tmp_path / "sbin").mkdir()
    (tmp_path / "sbin" / "virtchd").write_text("")
    (tmp_path / ".bdf-harness-build").write_text(
        f"version={LIBVIRT_VERSION} sha256=0 prefix=/elsewhere/inst options=\n"
    )
    reason = unavailable_reason(tmp_path)
    assert reason is not None and "/elsewhere/inst" in reason and "LIBVIRT_PREFIX" in reason
    (tmp_path / ".bdf-harness-build").write_text(
        f"version={LIBVIRT_VERSION} sha256=0 prefix={tmp_path} options=\n"
    )
    assert unavailable_reason(tmp_path) is None or "built for" not in str(
        unavailable_reason(tmp_path)
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)
def test_a_daemon_that_does_not_come_up_is_not_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """virtchd runs but never answers: start fails, and ends the namespace it made."""
    import harness.targets.libvirtd as lv

    prefix = tmp_path / "inst"
    for sub in ("sbin", "run", "var", "etc"):
        (prefix / sub).mkdir(parents=True)
    (prefix / "sbin" / "virtlogd").write_text("#!/bin/sh\nexit 0\n")
    (prefix / "sbin" / "virtchd").write_text("#!/bin/sh\nexec sleep 600\n")
    for tool in ("virtlogd", "virtchd"):
        (prefix / "sbin" / tool).chmod(0o755)
    (prefix / ".bdf-harness-build").write_text(
        f"version={LIBVIRT_VERSION} sha256=0 prefix={prefix} options=\n"
    )
    monkeypatch.setattr(lv, "_START_TIMEOUT", 0.5)
    daemon = LibvirtDaemon(prefix, tmp_path / "root", "v53")
    with pytest.raises(lv.LibvirtUnavailable, match="did not come up"):
        asyncio.run(daemon.start())
    assert daemon.proc is None
    left = [
        p.name for p in Path("/proc").iterdir() if p.name.isdigit() and str(tmp_path) in _cmdline(p)
    ]
    assert left == [], f"processes of the failed daemon still run: {left}"


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _fake_prefix(tmp_path: Path, stderr: str) -> Path:
    """A prefix whose virsh fails the way libvirt's does."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    virsh = bindir / "virsh"
    virsh.write_text(f"#!/bin/sh\nprintf '%s\\n' {json.dumps(stderr)} >&2\nexit 1\n")
    virsh.chmod(virsh.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def test_virsh_no_support_is_unsupported(tmp_path: Path) -> None:
    prefix = _fake_prefix(tmp_path, f"error: Failed to attach device\nerror: {NO_SUPPORT}")
    daemon = LibvirtDaemon(prefix, tmp_path / "root", "v53")
    with pytest.raises(UnsupportedOperation, match=r"attach-device.*not supported"):
        asyncio.run(daemon.virsh("attach-device", "testvm", "nic.xml"))


def test_virsh_failure_keeps_libvirts_message(tmp_path: Path) -> None:
    prefix = _fake_prefix(tmp_path, "error: failed to get domain 'nope'")
    daemon = LibvirtDaemon(prefix, tmp_path / "root", "v53")
    with pytest.raises(OperationFailed, match="failed to get domain 'nope'"):
        asyncio.run(daemon.virsh("start", "nope"))


def test_conformance_markdown_lists_outcomes_and_evidence() -> None:
    failing = ScenarioResult(
        "A3 x",
        str(ROOT / "scenarios" / "lifecycle" / "a3.yaml"),
        status=FAILED,
        target="libvirt",
        steps=[
            StepResult(1, "define domain"),
            StepResult(
                2,
                "start testvm",
                status=FAILED,
                error="[unaddressed] disk vda (and 1 more)",
                violations=[
                    {"rule": "unaddressed", "message": "[unaddressed] disk vda: live has nothing"},
                    {"rule": "live-vs-chv", "message": "[live-vs-chv] NIC: chv has 03, not 02"},
                ],
            ),
        ],
    )
    unsupported = ScenarioResult(
        "C1 y", "/tmp/bdf-scenario-abc/c1.yaml", status=UNSUPPORTED, failure="requires migration"
    )
    text = conformance_markdown(
        RunResult([failing, unsupported], target="libvirt"), libvirt_version=LIBVIRT_VERSION
    )
    assert "| failed | 1 |" in text and "| unsupported | 1 |" in text and "| passed | 0 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| A3 x"))
    assert "`scenarios/lifecycle/a3.yaml`" in row and "2: `start testvm`" in row
    assert row.index("[live-vs-chv]") < row.index("[unaddressed]")  # disagreement first
    assert str(ROOT) not in text and "bdf-scenario-abc" not in text


# --------------------------------------------------------------------------- with libvirt
@pytest.fixture
def host() -> Iterator[LibvirtHost]:
    work = Path(
        tempfile.mkdtemp(prefix="lvt-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    )
    loop = asyncio.new_event_loop()
    h = loop.run_until_complete(LibvirtTarget().open_host("host", work, "v53"))
    h.loop = loop  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        loop.run_until_complete(h.close())
        loop.close()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _run(h: LibvirtHost, coro: Any) -> Any:
    return h.loop.run_until_complete(coro)  # type: ignore[attr-defined]


def _log_errors(h: LibvirtHost) -> list[str]:
    log = h.daemon.log
    text = log.read_text() if log.exists() else ""
    return [line for line in text.splitlines() if re.search(r": error : ", line)]


@needs_libvirt
def test_start_path_against_fakechv(host: LibvirtHost) -> None:
    """define + start: libvirt's vm.create, vm.add-net with the tap's fd, vm.boot, vm.info."""
    name = _run(host, host.define(DEFAULT_DOMAIN, source="domain-chv.xml"))
    assert name == "testvm" and host.domains() == ["testvm"]
    _run(host, host.start("testvm"))
    view = _run(host, host.view("testvm"))
    assert view.state == "running"
    assert view.live is not None and view.persistent is not None and view.chv_info is not None
    config = view.chv_info["config"]
    assert view.chv_info["state"] == "Running"
    assert [d["path"] for d in config["disks"]] == [
        "/var/lib/libvirt/storage-pools/nfs-share/nixos.img"
    ]
    assert [n["mac"] for n in config["net"]] == ["52:54:00:e5:b8:01"]
    assert host.daemon.chv_socket("testvm").exists()
    # What stock libvirt 11.3 does with BDFs: the NIC keeps the slot written in the XML in
    # both definitions, vda gets none, and CHV places every device itself.
    live_nic = next(d for d in view.live.devices() if d.label.startswith("interface"))
    assert live_nic.address is not None and live_nic.address.to_chv_bdf() == "0000:00:02.0"
    assert next(d for d in view.live.devices() if d.label == "disk vda").address is None
    owners = {
        label: bdf
        for bdf, cid in view.chv_bdfs.items()
        for label in [view.chv_owners.get(cid, (cid, ""))[0]]
    }
    assert owners["interface 52:54:00:e5:b8:01"] != "0000:00:02.0"
    rules = {v.rule for v in _run(host, host.violations("testvm"))}
    assert {"live-vs-chv", "unaddressed", "chv-extra"} <= rules
    _run(host, host.destroy("testvm"))
    assert _run(host, host.view("testvm")).state == "shut off"
    _run(host, host.undefine("testvm"))
    assert host.domains() == []


@needs_libvirt
def test_start_is_clean_and_a_restart_after_destroy_finds_the_taps_busy(host: LibvirtHost) -> None:
    xml = re.sub(r"<serial type='pty'>.*?</serial>", "", DEFAULT_DOMAIN, flags=re.S)
    _run(host, host.define(xml, source="domain-chv.xml without serial"))
    _run(host, host.start("testvm"))
    assert _log_errors(host) == []
    _run(host, host.destroy("testvm"))
    # stock 11.3's destroy leaves the daemonized hypervisor running, which still holds
    # the tap fds libvirt gave it (as real CHV does, fakechv.fds): the next start cannot
    # open the taps again, on fakechv as on real CHV
    with pytest.raises(OperationFailed, match="Failed while adding guest interfaces"):
        _run(host, host.start("testvm"))
    assert any("Device or resource busy" in line for line in _log_errors(host))


@needs_libvirt
def test_default_domain_leaves_no_error_in_virtchd_log(host: LibvirtHost) -> None:
    _run(host, host.define(DEFAULT_DOMAIN, source="domain-chv.xml"))
    _run(host, host.start("testvm"))
    assert _log_errors(host) == []


@needs_libvirt
def test_hotplug_and_migration_are_unsupported(host: LibvirtHost) -> None:
    _run(host, host.define(DEFAULT_DOMAIN, source="domain-chv.xml"))
    _run(host, host.start("testvm"))
    before = _run(host, host.view("testvm")).live.to_xml()
    disk = "<disk type='file'><source file='/nfs/vdb.img'/><target dev='vdb'/></disk>"
    flags = {"live": False, "config": False, "current": False, "persistent": True}
    with pytest.raises(UnsupportedOperation, match="not supported by the connection driver"):
        _run(host, host.attach_device("testvm", disk, flags, source="vdb"))
    with pytest.raises(UnsupportedOperation, match="migration"):
        _run(host, host.migrate("testvm", host, {"live": True}))
    assert _run(host, host.view("testvm")).live.to_xml() == before


@needs_libvirt
def test_failed_start_is_an_operation_failure(host: LibvirtHost) -> None:
    _run(host, host.define(DEFAULT_DOMAIN, source="domain-chv.xml"))
    _run(host, host.inject_fault(None, {"endpoint": "vm.boot"}))
    with pytest.raises(OperationFailed, match="failed to boot guest VM"):
        _run(host, host.start("testvm"))
    assert _run(host, host.view("testvm")).state == "shut off"


@needs_libvirt
def test_daemon_restart_forgets_definitions(host: LibvirtHost) -> None:
    """libvirt 11.3's CH driver keeps persistent definitions in memory only (ch_conf.c has
    no configDir, ch_driver.c loads no configs at start-up): a restart forgets them."""
    _run(host, host.define(DEFAULT_DOMAIN, source="domain-chv.xml"))
    assert _run(host, host.view("testvm")).persistent is not None
    _run(host, host.daemon_restart())
    assert host.domains() == []
    assert _run(host, host.view("testvm")).state is None
    assert _log_errors(host) == []


@needs_libvirt
def test_restore_fails_in_stock_libvirt(host: LibvirtHost, tmp_path: Path) -> None:
    """save works; restore and managedsave + start fail in libvirt 11.3, whatever the
    hypervisor: virCHProcessStartRestore starts CHV without virCHProcessPrepareHost, so the
    pid file path is unset and reading it fails ("didn't show up: Bad address")."""
    xml = re.sub(r"<serial type='pty'>.*?</serial>", "", DEFAULT_DOMAIN, flags=re.S)
    _run(host, host.define(xml, source="domain-chv.xml without serial"))
    _run(host, host.start("testvm"))
    _run(host, host.save("testvm", tmp_path / "saved"))
    assert _run(host, host.view("testvm")).state == "shut off"
    with pytest.raises(OperationFailed, match="failed to create connection to CH socket"):
        _run(host, host.restore(tmp_path / "saved"))
    assert any("didn't show up: Bad address" in line for line in _log_errors(host))
    assert _run(host, host.view("testvm")).state == "shut off"


@needs_libvirt
@pytest.mark.slow
def test_conformance_matches_committed_baseline() -> None:
    """What the scenarios give against stock libvirt is what docs/ records.

    ``tox -e libvirt`` writes the run to $LIBVIRT_CONFORMANCE; otherwise it runs here.
    """
    produced = os.environ.get("LIBVIRT_CONFORMANCE")
    if produced:
        text = Path(produced).read_text()
    else:
        run = run_paths([ROOT / "scenarios"], target="libvirt", profile="v53")
        text = conformance_markdown(
            run, libvirt_version=LIBVIRT_VERSION, start_path=asyncio.run(start_path())
        )
    assert BASELINE.exists(), f"{BASELINE} is missing: run tox -e libvirt"
    assert text == BASELINE.read_text(), (
        f"the libvirt conformance run differs from {BASELINE}; regenerate it with "
        "bdf-harness run scenarios --target libvirt --profile v53 "
        "--conformance docs/libvirt-11.3-conformance.md"
    )
    assert PASSED in text  # the table lists every outcome
