"""The ``chv`` target: the reference driver on real ``cloud-hypervisor`` processes.

The binary is ``--chv-binary``/``$CHV_BINARY`` (default: the shared v53.0 build), the
guest ``--guest-kernel``/``--guest-cmdline`` (default: the shared guest,
:mod:`harness.chv.binary`). The run's profile is the one the binary's ``--version``
names; a scenario written for other releases only is ``unsupported``.

What changes against the ``reference`` target, so that a real CHV can run the domains:

* each hypervisor runs as root in a network namespace of its own (the taps it creates
  stay there);
* a domain boots the guest kernel: its ``<os>`` gets the guest's ``<kernel>`` and
  ``<cmdline>``, and a ``<serial type='file'>`` in the host's directory that the guest
  writes its ready marker to;
* every disk and persistent-memory file is a sparse file in the host's directory (the
  scenario's path is kept in the file name);
* before a live detach the host waits for the guest's ready marker (until the guest's
  ACPI is up, CHV's eject notification is lost), and the driver waits for the eject as
  long as a real guest takes;
* what this host cannot back is ``unsupported`` with the reason, never passed: devices
  that need something this machine lacks (virtiofsd, ``/dev/vhost-vsock``, a VFIO or
  vDPA device, vhost-user backends), a save or migration when KVM refuses the vCPU state
  (nested KVM here), fault injection (real CHV has none).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

from lxml import etree

from harness.chv.binary import READY_MARKER, ChvBinary, Guest, NotRealChv, find_binary, identify
from harness.targets.base import OperationFailed, UnsupportedOperation
from harness.targets.chvxml import ChvXml
from harness.targets.reference import ReferenceHost

__all__ = [
    "DETACH_TIMEOUT",
    "READY_TIMEOUT",
    "ChvHost",
    "ChvTarget",
]

#: how long the driver waits for the guest to eject (measured here: 2.4-8 s)
DETACH_TIMEOUT = 30.0
#: how long a detach waits for the guest's ready marker (40-50 s here idle, minutes under load)
READY_TIMEOUT = 600.0
#: how often a wait for the guest says so on stderr
_PROGRESS_EVERY = 20.0
#: what KVM answers when it cannot give CHV a nested vCPU's state (snapshot, migration)
_NO_VCPU_STATE = re.compile(r"GetNestedState|Could not get vCPU state")


class ChvHost(ReferenceHost):
    """A reference driver whose hypervisors are real CHV processes."""

    def __init__(self, name: str, workdir: Path, launcher: Any, segments: int, guest: Guest):
        super().__init__(name, workdir, launcher, segments, detach_timeout=DETACH_TIMEOUT)
        self.guest = guest
        self.xml = ChvXml(guest, workdir / "images", workdir / "serial")

    # -- the guest --------------------------------------------------------------------
    async def _wait_ready(self, domain: str) -> None:
        """Until the running guest of ``domain`` printed its ready marker."""
        rec = self.driver.domains.get(domain)
        if rec is None or rec.live is None or rec.state != "running":
            return
        path = self.xml.serial_path(domain)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        started = loop.time()
        next_note = started + _PROGRESS_EVERY
        while True:
            try:
                if READY_MARKER.encode() in path.read_bytes():
                    return
            except FileNotFoundError:
                pass
            now = loop.time()
            if now >= next_note:  # a slow boot is shown, not silent
                print(
                    f"bdf-harness: chv: waiting for the guest of {domain} on {self.name} to "
                    f"boot ({now - started:.0f}s of at most {READY_TIMEOUT:g}s)",
                    file=sys.stderr,
                    flush=True,
                )
                next_note = now + _PROGRESS_EVERY
            if now > deadline:
                raise OperationFailed(
                    f"the guest of {domain} printed no {READY_MARKER} within {READY_TIMEOUT:g}s "
                    f"(serial console: {path})"
                )
            await asyncio.sleep(0.25)

    def _new_boot(self, domain: str) -> None:
        """The guest boots again: its old console output says nothing about it."""
        path = self.xml.serial_path(domain)
        if path.exists():
            path.replace(path.with_name(path.name + ".old"))

    # -- operations -------------------------------------------------------------------
    async def define(self, xml: str, *, source: str) -> str:
        return await super().define(self.xml.domain(xml), source=source)

    async def create(self, xml: str, *, source: str) -> str:
        xml = self.xml.domain(xml)
        name = (etree.fromstring(xml.encode()).findtext("name") or "").strip()
        self._new_boot(name)
        return await super().create(xml, source=source)

    async def start(self, domain: str) -> None:
        self._new_boot(domain)
        await super().start(domain)

    async def reboot(self, domain: str) -> None:
        self._new_boot(domain)
        await super().reboot(domain)

    async def attach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        await super().attach_device(domain, self.xml.device(xml), flags, source=source)

    async def detach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None:
        from harness.driver.records import AttachFlags, DriverError

        xml = self.xml.device(xml)
        rec = self.driver.domains.get(domain)
        active = rec is not None and rec.live is not None
        try:
            affects_live, _config = AttachFlags(**flags).resolve(active)
        except DriverError:
            affects_live = False  # the driver refuses the flags itself
        if affects_live:
            await self._wait_ready(domain)
        await super().detach_device(domain, xml, flags, source=source)

    async def save(self, domain: str, path: Path) -> None:
        await self._no_vcpu_state(super().save(domain, path))

    async def managedsave(self, domain: str) -> None:
        await self._no_vcpu_state(super().managedsave(domain))

    async def restore(self, path: Path) -> str:
        self._new_boot_of_image(path)
        return str(await self._no_vcpu_state(super().restore(path)))

    def _new_boot_of_image(self, path: Path) -> None:
        xml = Path(path) / "domain.xml"
        try:
            name = (etree.parse(str(xml)).findtext("name") or "").strip()
        except (OSError, etree.XMLSyntaxError):
            return
        if name:
            self._new_boot(name)

    async def _no_vcpu_state(self, coro: Any) -> Any:
        try:
            return await coro
        except OperationFailed as exc:
            text = str(exc)
            if _NO_VCPU_STATE.search(text):
                # one fixed reason: CHV words the same refusal differently from run to run
                # ("GetNestedState", "Could not get vCPU state GetNestedState(...)")
                raise UnsupportedOperation(
                    "not possible on this host: KVM refuses CHV the vCPU state a snapshot "
                    "needs (GetNestedState)"
                ) from None
            raise

    async def migrate(self, domain: str, dest: Any, options: dict[str, bool]) -> None:
        raise UnsupportedOperation(
            "not possible on this host: live migration needs the vCPU state this host's "
            "nested KVM refuses (GetNestedState)"
        )

    async def inject_fault(self, domain: str | None, rule: dict[str, Any]) -> None:
        raise UnsupportedOperation("real Cloud Hypervisor has no fault injection")


class ChvTarget:
    """The reference driver on the real ``cloud-hypervisor`` binary."""

    name = "chv"
    features: frozenset[str] = frozenset()
    #: why a feature a scenario requires is missing
    why_not = {
        "migration": "not possible on this host: live migration needs the vCPU state this "
        "host's nested KVM refuses (GetNestedState)",
        "faults": "real Cloud Hypervisor has no fault injection",
    }

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        guest: Guest | None = None,
    ) -> None:
        self.binary: ChvBinary = identify(find_binary(binary))
        self.guest = guest or Guest.find()
        if os.geteuid() != 0:
            raise NotRealChv("the chv target runs cloud-hypervisor as root (for /dev/kvm)")
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            raise NotRealChv("/dev/kvm is not usable here: the chv target needs KVM")
        #: the only profile it runs: the binary's release
        self.profiles: tuple[str, ...] | None = (self.binary.profile,)

    def describe(self, profile: str) -> str:
        return self.binary.describe()

    async def open_host(
        self,
        name: str,
        workdir: Path,
        profile: str,
        *,
        segments: int = 1,
        eject: str = "immediate",
    ) -> ChvHost:
        from harness.driver.launcher import ProcessLauncher

        if profile != self.binary.profile:
            raise UnsupportedOperation(
                f"profile {profile}: the binary is {self.binary.banner} ({self.binary.profile})"
            )
        if eject != "immediate":
            raise UnsupportedOperation(
                f"eject {eject}: a real guest ejects when it ejects (2-8 s here)"
            )
        launcher = ProcessLauncher(
            profile,
            run_dir=workdir / "run",
            command=[str(self.binary.path)],
            private_net=True,
        )
        host = ChvHost(name, workdir, launcher, segments, self.guest)
        return await host.open()  # type: ignore[return-value]
