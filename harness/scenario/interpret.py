"""The step interpreter: one place that turns a scenario's virsh-like commands into
operations on a host, for the scenario runner and the property machine alike.

A command (:class:`harness.model.virsh.Command`) runs on one host of a run
(:class:`harness.targets.base.Host`); FILE arguments are documents of the run, save
images live in the host's scratch directory, ``detach-disk``/``detach-interface`` look
the device up in the domain's definitions as virsh does, and the reference front end
refuses a ``--address`` CHV cannot honour before it becomes XML.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.errors import HarnessError
from harness.model.domain import Domain
from harness.model.virsh import Command, VirshError, detach_target_xml, disk_xml, interface_xml
from harness.scenario.model import Document
from harness.targets.base import OperationFailed, UnsupportedOperation

__all__ = [
    "Context",
    "Operations",
    "check_virsh_address",
    "detach_xml",
    "execute",
    "scratch_path",
]


def _flags(cmd: Command) -> dict[str, bool]:
    return cmd.device_flags()


class Operations(Protocol):
    """What commands need of a host: the virsh-like operations of
    :class:`harness.targets.base.Host`, and its work directory (for save images)."""

    workdir: Path

    async def define(self, xml: str, *, source: str) -> str: ...
    async def undefine(self, domain: str) -> None: ...
    async def create(self, xml: str, *, source: str) -> str: ...
    async def start(self, domain: str) -> None: ...
    async def destroy(self, domain: str) -> None: ...
    async def shutdown(self, domain: str) -> None: ...
    async def reboot(self, domain: str) -> None: ...
    async def managedsave(self, domain: str) -> None: ...
    async def save(self, domain: str, path: Path) -> None: ...
    async def restore(self, path: Path) -> str: ...
    async def attach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None: ...
    async def detach_device(
        self, domain: str, xml: str, flags: dict[str, bool], *, source: str
    ) -> None: ...
    async def daemon_restart(self) -> None: ...
    async def migrate(self, domain: str, dest: Any, options: dict[str, bool]) -> None: ...


@dataclass
class Context:
    """What the commands of a run work on.

    ``hosts``: the run's hosts by name; ``document``: a FILE argument (a document name
    or a path next to the scenario) -> its text and source; ``definitions``: (host,
    domain) -> the domain's live and persistent definitions as the run last saw them,
    None when there is no such domain; ``segments``: the PCI segments the domains have.
    """

    hosts: Mapping[str, Operations]
    document: Callable[[str], Document]
    definitions: Callable[[str, str], tuple[Domain | None, Domain | None] | None]
    segments: int = 1
    #: the release's host-bridge rule (:class:`harness.chv.capabilities.ChvCapabilities`)
    host_bridge_all_segments: bool = True


async def execute(ctx: Context, cmd: Command, host_name: str) -> None:
    """Run one command on the host ``host_name``; the host's errors pass through."""
    host = ctx.hosts[host_name]
    name = cmd.name
    domain = cmd.domain or ""
    if name in ("define", "create"):
        doc = ctx.document(str(cmd.get("file")))
        if name == "define":
            await host.define(doc.text, source=doc.source)
        else:
            await host.create(doc.text, source=doc.source)
    elif name == "undefine":
        await host.undefine(domain)
    elif name in ("start", "destroy", "shutdown", "reboot", "managedsave"):
        await getattr(host, name)(domain)
    elif name in ("attach-device", "detach-device"):
        doc = ctx.document(str(cmd.get("file")))
        op = host.attach_device if name == "attach-device" else host.detach_device
        await op(domain, doc.text, _flags(cmd), source=doc.source)
    elif name == "attach-disk":
        xml = disk_xml(cmd)
        check_virsh_address(cmd, ctx.segments, ctx.host_bridge_all_segments)
        await host.attach_device(domain, xml, _flags(cmd), source="attach-disk")
    elif name == "attach-interface":
        await host.attach_device(domain, interface_xml(cmd), _flags(cmd), source="attach-interface")
    elif name in ("detach-disk", "detach-interface"):
        xml = detach_xml(ctx, host_name, cmd)
        await host.detach_device(domain, xml, _flags(cmd), source=name)
    elif name == "save":
        await host.save(domain, scratch_path(host, str(cmd.get("file"))))
    elif name == "restore":
        await host.restore(scratch_path(host, str(cmd.get("file"))))
    elif name == "daemon-restart":
        await host.daemon_restart()
    elif name == "migrate":
        dest = ctx.hosts[str(cmd.get("desturi"))]
        options = {k: v for k, v in cmd.args.items() if isinstance(v, bool)}
        await host.migrate(domain, dest, options)
    else:  # pragma: no cover - the loader only accepts known commands
        raise UnsupportedOperation(f"command {name} is not implemented by the runner")


def check_virsh_address(cmd: Command, segments: int, host_bridge_all_segments: bool = True) -> None:
    """The reference front end checks ``--address`` before it becomes XML (semantics V2).

    virsh itself writes any four hex fields into the XML, and libvirt reads an all-zero
    address as "no address" (auto-assigned); the reference refuses what CHV cannot honour,
    so ``pci:0.0.00.0`` (the host bridge, catalogue I4) fails instead of moving elsewhere.
    """
    text = cmd.get("address")
    if text is None or not text.startswith("pci:"):
        return
    from harness.model.address import PciAddress, validate_for_chv

    try:
        addr = PciAddress.from_virsh(text)
        validate_for_chv(
            addr,
            segments=segments,
            device=f"disk {cmd.get('target')}",
            host_bridge_all_segments=host_bridge_all_segments,
        )
    except HarnessError as exc:
        raise OperationFailed(str(exc)) from None


def scratch_path(host: Operations, name: str) -> Path:
    """Where ``save``/``restore`` keep an image: the host's scratch directory."""
    path = Path(name)
    if path.is_absolute():
        path = Path(*path.parts[1:])
    scratch = host.workdir / "scratch"
    scratch.mkdir(exist_ok=True)
    return scratch / path


def detach_xml(ctx: Context, host_name: str, cmd: Command) -> str:
    """What virsh detach-disk / detach-interface look up in the domain XML."""
    domain = cmd.domain or ""
    found = ctx.definitions(host_name, domain)
    if found is None:
        raise VirshError(f"failed to get domain '{domain}'")
    live, persistent = found
    return detach_target_xml(cmd, live=live, persistent=persistent)
