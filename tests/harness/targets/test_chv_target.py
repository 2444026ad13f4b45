"""The ``chv`` target: the reference driver on a real ``cloud-hypervisor``.

Without KVM (or the shared binaries) only the parts that need no hypervisor run: which
binary it is, what the domain XML becomes, which devices this host cannot back, and
how a run is planned for the binary's release. With KVM, one scenario runs on the
real binary (``tox -e chv`` runs many more).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from lxml import etree

from harness.chv.binary import Guest, NotRealChv, find_binary, identify, shared_chv_dir
from harness.chv.capabilities import UnknownRelease, profile_for_version
from harness.model.domain import Device
from harness.scenario.batch import plan
from harness.scenario.results import UNSUPPORTED, ScenarioResult
from harness.targets.base import UnsupportedOperation
from harness.targets.chv import ChvHost
from harness.targets.chvxml import unbackable

ROOT = Path(__file__).resolve().parents[3]
SHARED = shared_chv_dir()
V53 = SHARED / "cloud-hypervisor-v53.0"


def _usable() -> str | None:
    if not V53.is_file():
        return f"no {V53}"
    if os.geteuid() != 0:
        return "not root"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no usable /dev/kvm"
    return None


REASON = _usable()


@pytest.mark.parametrize(
    ("banner", "profile"),
    [
        ("cloud-hypervisor v52.0.0", "v52"),
        ("cloud-hypervisor v53.0", "v53"),
        ("cloud-hypervisor v53.0.0\nMigration Protocol Versions: 0", "v53"),
        ("cloud-hypervisor v53.0-246-gae44c2971", "head"),
        ("cloud-hypervisor v54.0.0", "head"),
        ("cloud-hypervisor v52.1.0", "v52"),
    ],
)
def test_the_profile_follows_the_version(banner: str, profile: str) -> None:
    assert profile_for_version(banner) == profile


def test_an_unknown_release_or_banner_is_refused() -> None:
    with pytest.raises(UnknownRelease, match="no capability row"):
        profile_for_version("cloud-hypervisor v40.0.0")
    with pytest.raises(UnknownRelease, match="not a cloud-hypervisor"):
        profile_for_version("qemu 9.0")


def test_fakechv_is_not_taken_for_real_chv(tmp_path: Path) -> None:
    script = tmp_path / "cloud-hypervisor"
    script.write_text("#!/usr/bin/python3\nfrom fakechv.cli import main\nmain()\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(NotRealChv, match="is fakechv"):
        identify(script)
    with pytest.raises(NotRealChv, match=r"no cloud-hypervisor binary at .*CHV_BINARY"):
        identify(tmp_path / "missing")


def test_binary_and_guest_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHV_BINARY", raising=False)
    assert find_binary() == SHARED / "cloud-hypervisor-v53.0"
    monkeypatch.setenv("CHV_BINARY", "/opt/chv")
    assert find_binary() == Path("/opt/chv") and find_binary("/x") == Path("/x")
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"")
    guest = Guest.find(str(kernel), "console=ttyS0")
    assert guest == Guest(kernel, "console=ttyS0")
    with pytest.raises(NotRealChv, match="no guest kernel"):
        Guest.find(str(tmp_path / "none"), "")


@pytest.mark.skipif(not V53.is_file(), reason=f"no {V53}")
def test_the_shared_binaries_are_identified() -> None:
    found = {
        name: identify(SHARED / f"cloud-hypervisor-{name}").profile
        for name in ("v52.0", "v53.0", "head")
        if (SHARED / f"cloud-hypervisor-{name}").is_file()
    }
    assert found == {"v52.0": "v52", "v53.0": "v53", "head": "head"}


def _host(tmp_path: Path) -> ChvHost:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"")
    launcher = SimpleNamespace(profile="v53")
    return ChvHost("host", tmp_path, launcher, segments=1, guest=Guest(kernel, "quiet"))


DOMAIN = """<domain type='kvm'><name>vm1</name><memory unit='KiB'>524288</memory>
<os><type>hvm</type><kernel>/etc/CLOUDHV.fd</kernel><cmdline>root=/dev/vda</cmdline></os>
<devices>
  <disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='disk'><source file='/nfs/vdb.img'/>
    <target dev='vdb' bus='virtio'/></disk>
  <serial type='pty'><target port='0'/></serial>
  <interface type='ethernet'><mac address='52:54:00:00:00:01'/><model type='virtio'/></interface>
</devices></domain>"""


def test_a_domain_boots_the_guest_on_sparse_images(tmp_path: Path) -> None:
    host = _host(tmp_path)
    root = etree.fromstring(host.xml.domain(DOMAIN).encode())
    assert root.findtext("os/kernel") == str(tmp_path / "vmlinux")
    assert root.findtext("os/cmdline") == "quiet"
    serials = root.findall("devices/serial")
    assert [s.get("type") for s in serials] == ["file"]
    assert serials[0].find("source").get("path") == str(tmp_path / "serial" / "vm1.log")
    sources = [d.find("source").get("file") for d in root.findall("devices/disk")]
    assert all(Path(p).parent == tmp_path / "images" for p in sources)
    assert "sdz" in sources[0] and "vdb.img" in sources[1] and sources[0] != sources[1]
    for path in sources:
        st = os.stat(path)
        assert st.st_size == 64 << 20 and st.st_blocks == 0  # sparse
    assert [d.get("type") for d in root.findall("devices/disk")] == ["file", "file"]
    # the same path is the same image again (a re-attach finds its disk)
    again = etree.fromstring(host.xml.domain(DOMAIN).encode())
    assert [d.find("source").get("file") for d in again.findall("devices/disk")] == sources


@pytest.mark.parametrize(
    ("xml", "why"),
    [
        (
            "<filesystem type='mount'><driver type='virtiofs'/><source socket='/s'/>"
            "<target dir='t'/></filesystem>",
            "virtiofsd",
        ),
        (
            "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='1' "
            "slot='0' function='0'/></source></hostdev>",
            "vfio-pci",
        ),
        ("<interface type='vdpa'><source dev='/dev/vhost-vdpa-0'/></interface>", "vhost-vdpa"),
        (
            "<interface type='vhostuser'><source type='unix' path='/s' mode='client'/>"
            "<model type='virtio'/></interface>",
            "vhost-user",
        ),
    ],
)
def test_what_this_host_cannot_back_is_unsupported(tmp_path: Path, xml: str, why: str) -> None:
    reason = unbackable(Device.from_xml(xml))
    assert reason is not None and why in reason
    with pytest.raises(UnsupportedOperation, match=why):
        _host(tmp_path).xml.device(xml)


def test_disks_and_nics_can_be_backed() -> None:
    disk = "<disk type='file'><source file='/a'/><target dev='vdb' bus='virtio'/></disk>"
    nic = "<interface type='ethernet'><model type='virtio'/></interface>"
    assert unbackable(Device.from_xml(disk)) is None
    assert unbackable(Device.from_xml(nic)) is None


class _OnlyV53:
    name = "chv"
    features: frozenset[str] = frozenset()
    profiles: tuple[str, ...] | None = ("v53",)

    def describe(self, profile: str) -> str:
        return "cloud-hypervisor v53.0.0 (/bin/chv)"

    async def open_host(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise AssertionError


def test_a_run_on_a_binary_plans_its_release_only() -> None:
    items = plan([ROOT / "scenarios" / "chv-versions"], target=_OnlyV53())
    runs = [i for i in items if isinstance(i, tuple)]
    skipped = [i for i in items if isinstance(i, ScenarioResult)]
    assert runs and {p for _f, p in runs} == {"v53"}
    assert skipped and all(s.status == UNSUPPORTED for s in skipped)
    assert all(
        "target chv runs v53 (cloud-hypervisor v53.0.0" in (s.failure or "") for s in skipped
    )
    with pytest.raises(Exception, match="--profile v51: target chv runs v53 only"):
        plan([ROOT / "scenarios" / "chv-versions"], "v51", target=_OnlyV53())


@pytest.mark.slow
@pytest.mark.skipif(REASON is not None, reason=f"real CHV: {REASON}")
def test_a_scenario_on_real_chv(tmp_path: Path) -> None:
    from harness.scenario.batch import run_paths

    path = ROOT / "scenarios" / "hotplug" / "b9-many-devices-without-explicit-bdf.yaml"
    run = run_paths([path], target="chv", jobs=1)
    assert run.hypervisors == {"v53": f"cloud-hypervisor v53.0.0 ({V53})"}
    assert [s.status for s in run.scenarios] == ["passed"], run.scenarios[0].failure
    exchanges = [e for st in run.scenarios[0].steps for e in st.exchanges]
    assert any(e["endpoint"] == "vm.boot" and e["status"] == 204 for e in exchanges)
