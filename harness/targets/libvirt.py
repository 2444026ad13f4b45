"""The ``libvirt`` target: scenarios against a real libvirt (its CH driver) on fakechv.

Stock libvirt 11.3.0 is built by ``tools/build-libvirt.sh`` into ``.cache/libvirt/inst``
(``LIBVIRT_PREFIX`` overrides). Each host of a scenario is one private ``virtchd`` (plus
the ``virtlogd`` it logs through), run as root inside new mount, network and PID
namespaces:

* the build's compiled-in ``run/``, ``var/`` and ``etc/`` directories are bind-mounted
  from the host's work directory, so sockets, pid files, domain state and persistent
  definitions all live under that directory and the system's ``/run/libvirt`` is never
  touched; several daemons can run side by side;
* tap devices (libvirt's CH driver opens the ``<target dev>`` of an ``ethernet``
  interface, which must exist when ``managed='no'``) are created in the private network
  namespace, so nothing appears on the machine's network;
* ``cloud-hypervisor`` on the daemon's ``PATH`` is a small script that runs
  ``python -m fakechv`` with the host's profile (libvirt clears the environment of the
  processes it starts, so ``FAKECHV_PROFILE`` is written into the script);
* the cgroup file systems are unmounted in there, so libvirt sets up no cgroups for
  domains (it would otherwise create them in the machine's hierarchy);
* ending the namespace's first process ends every process in it, also a hypervisor
  libvirt failed to reap.

The domain XML is given to libvirt as written, except that ``<emulator>`` is dropped
(libvirt then fills in the ``cloud-hypervisor`` it finds on ``PATH``). Every operation goes
through ``virsh -c ch:///system?socket=...``; the live and persistent definitions are
read back with ``virsh dumpxml`` (``--inactive``), and CHV's view through the domain's
API socket (``run/libvirt/ch/NAME-socket``, the path libvirt gives CHV). Operations the
driver does not implement (libvirt reports "this function is not supported by the
connection driver": device hotplug, migration) are reported ``unsupported``.

``python -m harness.targets.libvirt [PATHS] [--markdown FILE]`` runs scenarios against
stock libvirt and writes the conformance summary (``docs/libvirt-11.3-conformance.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lxml import etree

import harness
from fakechv.openapi import reference_dir
from harness.checks.invariants import (
    Violation,
    check_definitions,
    check_live_vs_chv,
)
from harness.checks.view import DomainView
from harness.chv.translate import capabilities
from harness.errors import HarnessError
from harness.model.domain import Device, DeviceClass, Domain
from harness.scenario.results import (
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    UNSUPPORTED,
    RunResult,
    ScenarioResult,
)
from harness.targets.base import OperationFailed, UnsupportedOperation

__all__ = [
    "LIBVIRT_VERSION",
    "LibvirtDaemon",
    "LibvirtHost",
    "LibvirtTarget",
    "LibvirtUnavailable",
    "chv_owner_ids",
    "conformance_markdown",
    "libvirt_prefix",
    "main",
    "run_conformance",
    "unavailable_reason",
]

LIBVIRT_VERSION = "11.3.0"
REPO_ROOT = Path(harness.__file__).resolve().parents[1]
_STAMP = ".bdf-harness-build"
#: what libvirt says when its driver lacks an entry point (VIR_ERR_NO_SUPPORT)
NO_SUPPORT = "this function is not supported by the connection driver"
_START_TIMEOUT = 30.0


class LibvirtUnavailable(HarnessError):
    """The built libvirt, or what running it needs (root, namespaces), is not there."""


def libvirt_prefix() -> Path:
    """Where ``tools/build-libvirt.sh`` installed libvirt (``LIBVIRT_PREFIX`` overrides)."""
    env = os.environ.get("LIBVIRT_PREFIX")
    if env:
        return Path(env).resolve()
    return REPO_ROOT / ".cache" / "libvirt" / "inst"


def unavailable_reason(prefix: Path | None = None) -> str | None:
    """Why the libvirt target cannot run here, or None when it can."""
    prefix = prefix or libvirt_prefix()
    stamp = prefix / _STAMP
    if not (prefix / "sbin" / "virtchd").is_file() or not stamp.is_file():
        return f"no libvirt build in {prefix} (run tools/build-libvirt.sh)"
    stamp_text = stamp.read_text()
    if f"version={LIBVIRT_VERSION} " not in stamp_text:
        return f"{prefix} holds another libvirt version than {LIBVIRT_VERSION}"
    built = re.search(r"\bprefix=(\S+)", stamp_text)
    if built and Path(built.group(1)).resolve() != prefix.resolve():
        return (
            f"the libvirt in {prefix} was built for {built.group(1)} (libvirt compiles its "
            "paths in): point LIBVIRT_PREFIX there or rebuild with tools/build-libvirt.sh"
        )
    if os.geteuid() != 0:
        return "the libvirt target runs virtchd as root in private namespaces; not root"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux/iproute2) is not installed"
    return None


# --------------------------------------------------------------------------- the daemon
_INIT_SCRIPT = """\
set -e
P={prefix}
R={root}
for d in run var etc; do mount --bind "$R/$d" "$P/$d"; done
ip link set lo up
# no cgroup hierarchy in here: libvirt then creates no cgroups on the machine's
umount -R -l /sys/fs/cgroup 2>/dev/null || true
export PATH="$R/bin:$P/bin:$P/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
LIBVIRT_LOG_OUTPUTS="3:file:$R/virtlogd.log" "$P/sbin/virtlogd" -d
set +e
export LIBVIRT_LOG_OUTPUTS="3:file:$R/virtchd.log"
while [ ! -e "$R/stopping" ]; do
    "$P/sbin/virtchd" >>"$R/virtchd.out" 2>&1
    echo "virtchd exited with status $?" >>"$R/virtchd.out"
done
"""

_WRAPPER = """\
#!/bin/sh
# cloud-hypervisor for libvirt: fakechv with profile {profile}
F={faults}
if [ "$1" != "--version" ] && [ -s "$F" ]; then
    for spec in $(cat "$F"); do set -- "$@" --fault "$spec"; done
    rm -f "$F"
fi
export FAKECHV_PROFILE={profile} PYTHONPATH={pythonpath} CHV_REFERENCE_DIR={refdir}
exec {python} -m fakechv --profile {profile} --eject {eject} "$@"
"""


class LibvirtDaemon:
    """A private ``virtchd`` whose state lives under ``root``."""

    def __init__(self, prefix: Path, root: Path, profile: str, *, eject: str = "immediate") -> None:
        self.prefix = prefix
        self.root = root
        self.profile = profile
        self.eject = eject
        self.proc: asyncio.subprocess.Process | None = None

    # paths ------------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt" / "virtchd-sock"

    @property
    def uri(self) -> str:
        return f"ch:///system?socket={self.socket}"

    @property
    def log(self) -> Path:
        """virtchd's own log (warnings and errors)."""
        return self.root / "virtchd.log"

    def chv_socket(self, domain: str) -> Path:
        return self.root / "run" / "libvirt" / "ch" / f"{domain}-socket"

    def domain_log(self, domain: str) -> Path:
        """What the hypervisor printed (libvirt's per-domain log)."""
        return self.root / "var" / "log" / "libvirt" / "ch" / f"{domain}.log"

    # life cycle -------------------------------------------------------------
    async def start(self) -> None:
        reason = unavailable_reason(self.prefix)
        if reason:
            raise LibvirtUnavailable(reason)
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "var", "etc"):
            dest = self.root / sub
            if not dest.exists():
                shutil.copytree(self.prefix / sub, dest, symlinks=True)
        bindir = self.root / "bin"
        bindir.mkdir(exist_ok=True)
        wrapper = bindir / "cloud-hypervisor"
        wrapper.write_text(
            _WRAPPER.format(
                profile=shlex.quote(self.profile),
                eject=shlex.quote(self.eject),
                faults=shlex.quote(str(self.root / "pending-faults")),
                pythonpath=shlex.quote(str(REPO_ROOT)),
                refdir=shlex.quote(str(reference_dir())),
                python=shlex.quote(sys.executable),
            )
        )
        wrapper.chmod(0o755)
        script = self.root / "init.sh"
        script.write_text(
            _INIT_SCRIPT.format(
                prefix=shlex.quote(str(self.prefix)), root=shlex.quote(str(self.root))
            )
        )
        self.proc = await asyncio.create_subprocess_exec(
            "unshare",
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            str(script),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=open(self.root / "init.err", "wb"),
        )
        try:
            await self._wait_ready(None)
        except BaseException:
            await self.stop()  # a daemon that did not come up is not left running
            raise

    def _ns_init(self) -> int | None:
        """The namespace's first process (outside pid), child of ``unshare``."""
        if self.proc is None:
            return None
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        pids = [int(p) for p in text.split()]
        return pids[0] if pids else None

    def _virtchd_pid(self) -> int | None:
        init = self._ns_init()
        if init is None:
            return None
        try:
            text = Path(f"/proc/{init}/task/{init}/children").read_text()
        except OSError:
            return None
        for pid in text.split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if cmd.endswith(b"/virtchd"):
                return int(pid)
        return None

    async def _wait_ready(self, old_pid: int | None) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                break
            pid = self._virtchd_pid()
            if pid is not None and pid != old_pid and self.socket.exists():
                rc, _out, err = await self._virsh_raw("version")
                if rc == 0:
                    return
                last = err.strip()
            await asyncio.sleep(0.05)
        detail = ""
        for name in ("init.err", "virtchd.out", "virtchd.log"):
            path = self.root / name
            if path.exists() and path.read_text().strip():
                detail += f"\n{name}: {path.read_text().strip()[-800:]}"
        raise LibvirtUnavailable(f"virtchd in {self.root} did not come up: {last}{detail}")

    async def restart(self) -> None:
        """Stop virtchd (SIGTERM, as systemctl restart does) and wait for a new one."""
        pid = self._virtchd_pid()
        if pid is None:
            raise OperationFailed(f"virtchd in {self.root} is not running")
        os.kill(pid, signal.SIGTERM)
        await self._wait_ready(pid)

    async def stop(self) -> None:
        if self.proc is None:
            return
        (self.root / "stopping").touch()
        init = self._ns_init()
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)  # ends every process of the namespace
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:  # pragma: no cover - unshare should follow its child
            self.proc.kill()
            await self.proc.wait()
        self.proc = None

    def netns_exec(self, *argv: str) -> list[str]:
        init = self._ns_init()
        if init is None:
            raise OperationFailed(f"virtchd's namespace in {self.root} is gone")
        return ["nsenter", "-t", str(init), "-n", *argv]

    async def ensure_tap(self, name: str) -> None:
        """Create tap ``name`` in the daemon's network namespace unless it exists."""
        proc = await asyncio.create_subprocess_exec(
            *self.netns_exec("ip", "link", "show", name),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if await proc.wait() == 0:
            return
        proc = await asyncio.create_subprocess_exec(
            *self.netns_exec("ip", "tuntap", "add", "dev", name, "mode", "tap"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await proc.communicate()
        if proc.returncode != 0:
            raise OperationFailed(f"cannot create tap device {name!r}: {err.decode().strip()}")

    # virsh ------------------------------------------------------------------
    async def _virsh_raw(self, *args: str) -> tuple[int, str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIBVIRT_")}
        env["LC_ALL"] = "C"
        proc = await asyncio.create_subprocess_exec(
            str(self.prefix / "bin" / "virsh"),
            "-q",
            "-c",
            self.uri,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def virsh(self, *args: str) -> str:
        """Run virsh; OperationFailed with virsh's message, UnsupportedOperation for
        libvirt's "not supported by the connection driver"."""
        rc, out, err = await self._virsh_raw(*args)
        if rc != 0:
            message = " ".join(
                line.removeprefix("error: ").strip() for line in err.splitlines() if line.strip()
            )
            if NO_SUPPORT in message:
                raise UnsupportedOperation(
                    f"libvirt {LIBVIRT_VERSION}'s CH driver: virsh {args[0]}: {message}"
                )
            raise OperationFailed(message or f"virsh {args[0]} exited with status {rc}")
        return out


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


def _chv_bdfs(info: dict[str, Any]) -> dict[str, str]:
    """CHV device id -> BDF, from vm.info's device tree."""
    from harness.chv.info import chv_bdfs

    return chv_bdfs(info)


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

    def __init__(self, name: str, workdir: Path, daemon: LibvirtDaemon) -> None:
        self.name = name
        self.workdir = workdir
        self.daemon = daemon
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
                view.chv_bdfs = {bdf: cid for cid, bdf in _chv_bdfs(view.chv_info).items()}
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
    """Stock libvirt's CH driver (``tools/build-libvirt.sh``) with fakechv as CHV."""

    name = "libvirt"
    features: frozenset[str] = frozenset({"faults"})

    def __init__(self, prefix: Path | None = None) -> None:
        self.prefix = prefix or libvirt_prefix()

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
        daemon = LibvirtDaemon(self.prefix, workdir / "libvirt", profile, eject=eject)
        return await LibvirtHost(name, workdir, daemon).open()


# --------------------------------------------------------------------------- conformance
def run_conformance(
    paths: Iterable[Path | str], *, profile: str | None = "v53", prefix: Path | None = None
) -> RunResult:
    """Every scenario under ``paths`` against stock libvirt, one at a time."""
    from datetime import UTC, datetime

    from harness.scenario.batch import load_error, plan
    from harness.scenario.load import load_scenario
    from harness.scenario.run import default_workdir, run_scenario

    reason = unavailable_reason(prefix or libvirt_prefix())
    if reason:
        raise LibvirtUnavailable(reason)
    target = LibvirtTarget(prefix)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    results: list[ScenarioResult] = []
    for item in plan(paths, profile):
        if isinstance(item, ScenarioResult):
            item.target = target.name
            results.append(item)
            continue
        path, prof = item
        try:
            scenario = load_scenario(path)
        except HarnessError as exc:  # pragma: no cover - plan() loaded it already
            results.append(load_error(Path(path), str(exc), target.name))
            continue
        workdir = Path(tempfile.mkdtemp(prefix="lv-", dir=default_workdir()))
        try:
            results.append(asyncio.run(run_scenario(scenario, prof, target, workdir=workdir)))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return RunResult(
        scenarios=results, target=target.name, started=started, seconds=time.perf_counter() - t0
    )


_WORKDIR_RE = re.compile(r"/[^\s'\"]*/bdf-scenario-[^/\s'\"]+")


def _clean(text: str | None) -> str:
    """One line, without temporary paths, Markdown-safe."""
    text = _WORKDIR_RE.sub("$WORKDIR", text or "").replace(f"{REPO_ROOT}/", "")
    text = " ".join(text.split())
    return text.replace("|", "\\|")


#: the evidence that says most first: where the sides disagree, then what is missing
_RULE_ORDER = {
    "live-vs-chv": 0,
    "live-vs-persistent": 1,
    "duplicate": 2,
    "moved": 3,
    "changed-after-failure": 4,
    "chv-extra": 5,
    "unaddressed": 6,
}


DEFAULT_DOMAIN = REPO_ROOT / "scenarios" / "domains" / "domain-chv.xml"


async def start_path_table(
    domain_xml: Path = DEFAULT_DOMAIN, *, profile: str = "v53", prefix: Path | None = None
) -> str:
    """Markdown: where each device of ``domain_xml`` is after ``define`` + ``start``, in
    the live and persistent definitions and in CHV, with any warning or error libvirt
    logged on the way."""
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
    lines = [
        "| device | live XML | persistent XML | CHV (vm.info) |",
        "|---|---|---|---|",
    ]
    for label, sides in sorted(rows.items(), key=lambda kv: kv[1].get("chv", "~")):
        cells = [sides.get(side, "-") for side in ("live", "persistent", "chv")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    logged = [
        re.sub(r"^\S+ \S+: \d+: ", "", line)
        for line in log.splitlines()
        if re.search(r": (warning|error) : ", line)
    ]
    lines += ["", "virtchd logged (warnings and errors):", ""]
    lines += [f"- `{_clean(line)}`" for line in logged] or ["- nothing"]
    return "\n".join(lines) + "\n"


def _scenario_path(path: str) -> str:
    """``scenarios/...`` wherever the checkout is."""
    if path.startswith(f"{REPO_ROOT}/"):
        return os.path.relpath(path, REPO_ROOT)
    index = path.rfind("/scenarios/")
    return path[index + 1 :] if index >= 0 else _clean(path)


def _maps_text(step: Any) -> str:
    """`` (live: 02 interface ...; chv: 01 ..., 02 disk vda)`` after a failed step."""
    parts = []
    for side in ("live", "persistent", "chv"):
        for domain, slots in sorted(step.maps.get(side, {}).items()):
            if not slots:
                continue
            items = ", ".join(f"{bdf[5:]} {entry.device}" for bdf, entry in sorted(slots.items()))
            parts.append(f"{side} {domain}: {items}")
    return f" (slot maps after the step: {'; '.join(parts)})" if parts else ""


def conformance_markdown(run: RunResult, start_path: str | None = None) -> str:
    """The committed summary: per scenario its outcome and, for failures, the evidence.

    Deterministic for a given libvirt and fakechv (no times, no temporary paths).
    """
    counts = run.counts()
    lines = [
        f"# Stock libvirt {LIBVIRT_VERSION} (CH driver) against fakechv: conformance",
        "",
        "Generated by `tox -e libvirt` (`python -m harness.targets.libvirt --markdown "
        "docs/libvirt-11.3-conformance.md`): every scenario of `scenarios/` run with the "
        f"`libvirt` target, libvirt {LIBVIRT_VERSION} built from Debian's source package by "
        "`tools/build-libvirt.sh`, fakechv as `cloud-hypervisor`. Do not edit by hand.",
        "",
        "`unsupported`: the scenario needs something libvirt's CH driver does not "
        "implement (device hotplug, migration); it is neither a pass nor a failure.",
        "",
        "| outcome | scenarios |",
        "|---|---|",
    ]
    for status in (PASSED, FAILED, UNSUPPORTED, ERROR):
        lines.append(f"| {status} | {counts.get(status, 0)} |")
    if start_path:
        lines += [
            "",
            "## The catalogue's default domain after define and start",
            "",
            f"`scenarios/domains/domain-chv.xml` (vda without an address, the NIC at slot "
            f"0x02), defined and started through libvirt {LIBVIRT_VERSION} on fakechv v53:",
            "",
            start_path.rstrip("\n"),
        ]
    lines += [
        "",
        "## Scenarios",
        "",
        "| scenario | profile | outcome | step | evidence |",
        "|---|---|---|---|---|",
    ]
    for s in sorted(run.scenarios, key=lambda s: (s.file, s.profile)):
        step = next((st for st in s.steps if st.status not in (PASSED, SKIPPED)), None)
        where = f"{step.index}: `{_clean(step.text)}`" if step else ""
        if step is not None and step.violations:
            shown = sorted(
                (v for v in step.violations if v.get("expected") is not True),
                key=lambda v: _RULE_ORDER.get(str(v.get("rule")), 9),
            )
            evidence = "; ".join(_clean(str(v.get("message"))) for v in shown[:8])
            if len(shown) > 8:
                evidence += f"; and {len(shown) - 8} more"
        else:
            evidence = _clean(step.error if step and step.error else s.failure)
        if step is not None and step.maps:
            evidence += _maps_text(step)
        rel = _scenario_path(s.file)
        lines.append(
            f"| {_clean(s.name)} (`{rel}`) | {s.profile} | {s.status} | {where} | "
            f"{evidence.strip()} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m harness.targets.libvirt",
        description=f"run scenarios against stock libvirt {LIBVIRT_VERSION} (CH driver)",
    )
    p.add_argument("paths", nargs="*", default=[str(REPO_ROOT / "scenarios")])
    p.add_argument("--profile", default="v53", help="CHV profile for every scenario")
    p.add_argument("--markdown", type=Path, help="write the conformance summary here")
    p.add_argument("--report-dir", type=Path, help="also write the usual reports here")
    args = p.parse_args(argv)
    try:
        run = run_conformance(args.paths, profile=args.profile)
    except HarnessError as exc:
        print(f"libvirt target: {exc}", file=sys.stderr)
        return 2
    for s in run.scenarios:
        print(f"{s.status:12} {s.profile:5} {s.name}: {_clean(s.failure)}"[:200])
    counts = run.counts()
    print(", ".join(f"{counts.get(k, 0)} {k}" for k in (PASSED, FAILED, UNSUPPORTED, ERROR)))
    if args.markdown:
        table = asyncio.run(start_path_table())
        args.markdown.write_text(conformance_markdown(run, table))
        print(f"wrote {args.markdown}")
    if args.report_dir:
        from harness.reports.writer import write_reports

        write_reports(run, args.report_dir)
    # stock libvirt is expected to fail scenarios: the run itself succeeded
    return 1 if counts.get(ERROR, 0) else 0


if __name__ == "__main__":
    sys.exit(main())
