"""The ``libvirt`` target: scenarios against a real libvirt (its CH driver) on fakechv.

Each host of a scenario is one private ``virtchd`` (:mod:`harness.targets.libvirtd`).
The domain XML is given to libvirt as written, except that ``<emulator>`` is dropped
(libvirt then fills in the ``cloud-hypervisor`` it finds on ``PATH``). Every operation goes
through ``virsh -c ch:///system?socket=...``; the live and persistent definitions are
read back with ``virsh dumpxml`` (``--inactive``), and CHV's view through the domain's
API socket (``run/libvirt/ch/NAME-socket``, the path libvirt gives CHV). Operations the
driver does not implement (libvirt reports "this function is not supported by the
connection driver": device hotplug, migration) are reported ``unsupported``.

``bdf-harness run --target libvirt`` runs scenarios here; with ``--conformance FILE`` it
writes the conformance summary (:mod:`harness.reports.conformance`,
``docs/libvirt-11.3-conformance.md``), which includes :func:`start_path`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from harness.checks.invariants import (
    Violation,
    check_definitions,
    check_live_vs_chv,
)
from harness.checks.view import DomainView
from harness.chv.binary import BINARY_ENV, ChvBinary, Guest, identify
from harness.chv.capabilities import capabilities
from harness.chv.info import chv_bdfs
from harness.errors import HarnessError
from harness.model.domain import Device, DeviceClass, Domain
from harness.targets.base import UnsupportedOperation
from harness.targets.chvxml import ChvXml
from harness.targets.libvirtd import (
    LIBVIRT_VERSION,
    REPO_ROOT,
    LibvirtDaemon,
    LibvirtUnavailable,
    libvirt_prefix,
    unavailable_reason,
)

__all__ = [
    "LIBVIRT_VERSION",
    "LibvirtDaemon",
    "LibvirtHost",
    "LibvirtTarget",
    "LibvirtUnavailable",
    "StartPath",
    "chv_owner_ids",
    "libvirt_chv_ids",
    "live_vs_chv",
    "parse_definition",
    "start_path",
    "unavailable_reason",
]


# --------------------------------------------------------------------------- CHV side
def chv_owner_ids(live: Domain, info: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """CHV device id -> (label, class) of the live device it is.

    libvirt 11.3 sends no ``id`` for disks (CHV names them ``_diskN``) and its own for
    NICs, so devices are matched on what libvirt does send: a disk's path, a NIC's MAC;
    CHV's rng and virtio console are matched by kind.
    """
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    assert isinstance(config, dict)
    by_path = {
        str(d.get("path")): str(d.get("id"))
        for d in config.get("disks") or []
        if isinstance(d, dict) and d.get("id")
    }
    by_mac = {
        str(n.get("mac", "")).lower(): str(n.get("id"))
        for n in config.get("net") or []
        if isinstance(n, dict) and n.get("id")
    }
    out: dict[str, tuple[str, str]] = {}
    for device in live.devices():
        cid: str | None = None
        if device.cls is DeviceClass.DISK:
            source = device.element.find("source")
            path = None if source is None else source.get("file") or source.get("dev")
            cid = by_path.get(str(path))
        elif device.cls is DeviceClass.INTERFACE:
            cid = by_mac.get(device.mac or "")
        elif device.cls is DeviceClass.RNG:
            rng = config.get("rng")
            cid = str(rng.get("id") or "_rng") if isinstance(rng, dict) else None
        elif device.cls is DeviceClass.CONSOLE:
            cid = "__console"
        if cid:
            out[cid] = (device.label, device.cls.value)
    return out


def libvirt_chv_ids(
    owners: dict[str, tuple[str, str]],
) -> Callable[[Device], str | None]:
    """CHV's id for each device of a libvirt-managed domain, from :func:`chv_owner_ids`:
    libvirt names CHV's devices itself, so they are matched by disk path and NIC MAC."""
    by_label = {label: cid for cid, (label, _cls) in owners.items()}
    return lambda device: by_label.get(device.label)


def live_vs_chv(live: Domain, info: dict[str, Any]) -> list[Violation]:
    """``live-vs-chv`` and ``chv-extra`` for a libvirt-managed domain."""
    return check_live_vs_chv(
        live, info, capabilities("v53"), chv_id_of=libvirt_chv_ids(chv_owner_ids(live, info))
    )


async def _chv_info(path: Path) -> dict[str, Any] | None:
    from fakechv.wire import ApiRequest
    from harness.chv.client import ChvError, UnixSocketTransport

    if not path.exists():
        return None
    transport = UnixSocketTransport(str(path), timeout=10)
    try:
        resp = await transport.send(ApiRequest("GET", "/api/v1/vm.info", b""))
    except ChvError:
        return None
    finally:
        await transport.close()
    if resp.status != 200:
        return None
    data = json.loads(resp.body)
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- the host
_STATES = {"running": "running", "paused": "paused", "shut off": "shut off"}


def _prepare_xml(xml: str) -> tuple[str, list[str]]:
    """The XML libvirt gets (``<emulator>`` dropped) and the unmanaged taps it needs."""
    try:
        root = etree.fromstring(xml.encode())
    except etree.XMLSyntaxError:
        return xml, []  # libvirt reports the syntax error itself
    taps = []
    for emulator in root.findall("./devices/emulator"):
        parent = emulator.getparent()
        if parent is not None:
            parent.remove(emulator)
    ifaces = [root] if root.tag == "interface" else root.findall("./devices/interface")
    for iface in ifaces:
        target = iface.find("target")
        if iface.get("type") == "ethernet" and target is not None and target.get("dev"):
            if target.get("managed") == "no":
                taps.append(str(target.get("dev")))
    return etree.tostring(root, encoding="unicode"), taps


def parse_definition(xml: str, source: str) -> Domain:
    """A definition libvirt returned, for the BDF maps.

    libvirt keeps addresses the harness's model refuses (``type='drive'`` on a virtio disk,
    for one): those are not PCI addresses, so they are dropped rather than failing the read.
    """
    try:
        return Domain.from_xml(xml, source=source)
    except HarnessError:
        root = etree.fromstring(xml.encode())
        for address in root.findall("./devices/*/address"):
            if address.get("type") != "pci":
                parent = address.getparent()
                if parent is not None:
                    parent.remove(address)
        return Domain.from_xml(etree.tostring(root, encoding="unicode"), source=source)


class LibvirtHost:
    """One scenario host: a private virtchd driven through virsh."""

    def __init__(
        self, name: str, workdir: Path, daemon: LibvirtDaemon, chv_xml: ChvXml | None = None
    ) -> None:
        """``chv_xml``: libvirt runs a real CHV, the XML is rewritten for it first."""
        self.name = name
        self.workdir = workdir
        self.daemon = daemon
        self.chv_xml = chv_xml
        self._names: list[str] = []
        self._counter = 0

    async def open(self) -> LibvirtHost:
        await self.daemon.start()
        await self._refresh()
        return self

    async def _refresh(self) -> None:
        out = await self.daemon.virsh("list", "--all", "--name")
        self._names = sorted(line.strip() for line in out.splitlines() if line.strip())

    async def _xml_file(self, xml: str) -> Path:
        if self.chv_xml is not None:
            is_domain = xml.lstrip().startswith("<domain")
            xml = self.chv_xml.domain(xml) if is_domain else self.chv_xml.device(xml)
        text, taps = _prepare_xml(xml)
        for tap in taps:
            await self.daemon.ensure_tap(tap)
        self._counter += 1
        path = self.workdir / f"virsh-input-{self._counter}.xml"
        path.write_text(text)
        return path

    async def _run(self, *args: str) -> str:
        try:
            return await self.daemon.virsh(*args)
        finally:
            await self._refresh()

    @staticmethod
    def _domain_name(out: str, xml: str) -> str:
        m = re.search(r"Domain '([^']+)'", out)
        if m:
            return m.group(1)
        try:
            return (etree.fromstring(xml.encode()).findtext("name") or "").strip()
        except etree.XMLSyntaxError:
            return ""

    async def define(self, xml: str, *, source: str) -> str:
        out = await self._run("define", str(await self._xml_file(xml)))
        return self._domain_name(out, xml)

    async def undefine(self, domain: str) -> None:
        await self._run("undefine", domain)

    async def create(self, xml: str, *, source: str) -> str:
        out = await self._run("create", str(await self._xml_file(xml)))
        return self._domain_name(out, xml)

    async def start(self, domain: str) -> None:
        view = await self.view(domain)
        if view.persistent is not None:
            await self._xml_file(view.persistent.to_xml())  # its taps
        await self._run("start", domain)

    async def destroy(self, domain: str) -> None:
        await self._run("destroy", domain)

    async def shutdown(self, domain: str) -> None:
        await self._run("shutdown", domain)

    async def reboot(self, domain: str) -> None:
        await self._run("reboot", domain)

    async def managedsave(self, domain: str) -> None:
        await self._run("managedsave", domain)

    async def save(self, domain: str, path: Path) -> None:
        await self._run("save", domain, str(path))

    async def restore(self, path: Path) -> str:
        out = await self._run("restore", str(path))
        m = re.search(r"Domain '([^']+)'", out)
        return m.group(1) if m else ""

    @staticmethod
    def _flag_args(flags: dict[str, bool]) -> list[str]:
        return [
            f"--{name}" for name in ("live", "config", "current", "persistent") if flags.get(name)
        ]

    async def attach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        path = await self._xml_file(xml)
        await self._run("attach-device", domain, str(path), *self._flag_args(flags))

    async def detach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        path = await self._xml_file(xml)
        await self._run("detach-device", domain, str(path), *self._flag_args(flags))

    async def daemon_restart(self) -> None:
        await self.daemon.restart()
        await self._refresh()

    async def migrate(self, domain: str, dest: Any, options: dict[str, bool]) -> None:
        raise UnsupportedOperation(
            f"libvirt {LIBVIRT_VERSION}'s CH driver has no migration "
            "(no domainMigrate* entry points in src/ch/ch_driver.c)"
        )

    async def inject_fault(self, domain: str | None, rule: dict[str, Any]) -> None:
        spec = f"{rule['endpoint']}:{rule.get('count', 1)}:{rule.get('status', 500)}"
        names = [domain] if domain else self.domains()
        running = [n for n in names if self.daemon.chv_socket(n).exists()]
        if running and (domain or len(running) == 1):
            from fakechv.control import Control, ControlError
            from harness.chv.client import UnixSocketTransport

            body = {k: v for k, v in rule.items() if k != "domain"}
            transport = UnixSocketTransport(str(self.daemon.chv_socket(running[0])))
            try:
                await Control(transport.send).add_faults([body])
            except ControlError as exc:
                raise UnsupportedOperation(f"fakechv refused fault rule {body}: {exc}") from None
            finally:
                await transport.close()
            return
        with open(self.daemon.root / "pending-faults", "a") as f:
            f.write(spec + "\n")

    def domains(self) -> list[str]:
        return list(self._names)

    async def view(self, domain: str) -> DomainView:
        rc, out, _err = await self.daemon._virsh_raw("domstate", domain)
        if rc != 0:
            return DomainView(domain, None)
        state = _STATES.get(out.strip().splitlines()[0].strip() if out.strip() else "", out.strip())
        # not dominfo: it calls virDomainGetOSType, which the CH driver lacks (an error in
        # virtchd's log every time)
        listed = await self.daemon.virsh("list", "--all", "--persistent", "--name")
        persistent_flag = domain in {line.strip() for line in listed.splitlines()}
        view = DomainView(domain, state)
        if state in ("running", "paused"):
            view.live = parse_definition(
                await self.daemon.virsh("dumpxml", domain), f"{domain} live"
            )
        if persistent_flag:
            view.persistent = parse_definition(
                await self.daemon.virsh("dumpxml", "--inactive", domain), f"{domain} persistent"
            )
        if view.live is not None:
            view.chv_info = await _chv_info(self.daemon.chv_socket(domain))
            if view.chv_info is not None:
                view.chv_bdfs = {bdf: cid for cid, bdf in chv_bdfs(view.chv_info).items()}
                view.chv_owners = chv_owner_ids(view.live, view.chv_info)
        return view

    async def violations(self, domain: str) -> list[Violation]:

        view = await self.view(domain)
        chv_id_of = libvirt_chv_ids(view.chv_owners)
        return check_definitions(
            view.persistent,
            view.live,
            view.chv_info,
            capabilities(self.daemon.profile),
            chv_id_of=chv_id_of,
        )

    def take_exchanges(self) -> list[dict[str, Any]]:
        return []  # libvirt talks to CHV itself; its requests are not observed here

    async def close(self) -> None:
        await self.daemon.stop()


class LibvirtTarget:
    """Stock libvirt's CH driver (``tools/build-libvirt.sh``) with fakechv as CHV, or
    with a real ``cloud-hypervisor`` (``chv_binary``; ``$CHV_BINARY`` when set)."""

    name = "libvirt"

    def __init__(
        self,
        prefix: Path | None = None,
        *,
        chv_binary: str | os.PathLike[str] | None = None,
        guest: Guest | None = None,
    ) -> None:
        self.prefix = prefix or libvirt_prefix()
        given = chv_binary or os.environ.get(BINARY_ENV)
        self.chv: ChvBinary | None = identify(Path(given)) if given else None
        self.guest = guest or (Guest.find() if self.chv is not None else None)
        self.features: frozenset[str] = frozenset() if self.chv else frozenset({"faults"})
        self.profiles: tuple[str, ...] | None = (self.chv.profile,) if self.chv else None

    def describe(self, profile: str) -> str:
        what = self.chv.describe() if self.chv is not None else f"fakechv {profile}"
        return f"{what} spawned by libvirt {LIBVIRT_VERSION}'s virtchd"

    async def open_host(
        self,
        name: str,
        workdir: Path,
        profile: str,
        *,
        segments: int = 1,
        eject: str = "immediate",
    ) -> LibvirtHost:
        if segments != 1:
            raise UnsupportedOperation(
                f"libvirt {LIBVIRT_VERSION}'s CH driver sends no platform.num_pci_segments"
            )
        chv_xml = None
        if self.chv is not None:
            assert self.guest is not None
            if eject != "immediate":
                raise UnsupportedOperation(f"eject {eject}: a real guest ejects when it ejects")
            chv_xml = ChvXml(self.guest, workdir / "images", None)
        daemon = LibvirtDaemon(
            self.prefix,
            workdir / "libvirt",
            profile,
            eject=eject,
            chv_binary=self.chv.path if self.chv is not None else None,
        )
        return await LibvirtHost(name, workdir, daemon, chv_xml).open()


# --------------------------------------------------------------------------- start path
DEFAULT_DOMAIN = REPO_ROOT / "scenarios" / "domains" / "domain-chv.xml"


@dataclass
class StartPath:
    """Where a domain's devices are after ``define`` + ``start`` (:func:`start_path`)."""

    #: device label -> side (``live``, ``persistent``, ``chv``) -> BDF, or ``none``
    rows: dict[str, dict[str, str]]
    #: what virtchd logged as a warning or an error, without its time stamp
    logged: list[str] = field(default_factory=list)


async def start_path(
    domain_xml: Path = DEFAULT_DOMAIN, *, profile: str = "v53", prefix: Path | None = None
) -> StartPath:
    """Where each device of ``domain_xml`` is after ``define`` + ``start``, in the live
    and persistent definitions and in CHV, with the warnings and errors libvirt logged on
    the way."""
    with tempfile.TemporaryDirectory(prefix="lv-start-") as tmp:
        host = await LibvirtTarget(prefix).open_host("host", Path(tmp), profile)
        try:
            name = await host.define(domain_xml.read_text(), source=str(domain_xml))
            await host.start(name)
            view = await host.view(name)
            log = host.daemon.log.read_text() if host.daemon.log.exists() else ""
        finally:
            await host.close()
    rows: dict[str, dict[str, str]] = {}
    for side, dom in (("live", view.live), ("persistent", view.persistent)):
        for device in dom.devices() if dom is not None else []:
            addr = device.address
            rows.setdefault(device.label, {})[side] = addr.to_chv_bdf() if addr else "none"
    for bdf, cid in view.chv_bdfs.items():
        label = view.chv_owners.get(cid, (f"CHV device {cid}", ""))[0]
        rows.setdefault(label, {})["chv"] = bdf
    logged = [
        re.sub(r"^\S+ \S+: \d+: ", "", line)
        for line in log.splitlines()
        if re.search(r": (warning|error) : ", line)
    ]
    return StartPath(rows, logged)
