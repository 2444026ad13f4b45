"""Shared helpers of the driver and migration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from harness.driver.launcher import InProcessLauncher, Launcher, ProcessLauncher

DATA = Path(__file__).parent / "data" / "domains"
NIC2 = "52:54:00:e5:b8:02"
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def xml(name: str) -> str:
    """A catalogue template from tests/data/domains."""
    return (DATA / name).read_text()


def disk(target: str, slot: int | None = None) -> str:
    """A virtio disk on /nfs/<target>.img, optionally at an explicit slot."""
    addr = (
        f"<address type='pci' domain='0x0000' bus='0x00' slot='{slot:#04x}' function='0x0'/>"
        if slot is not None
        else ""
    )
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='/nfs/{target}.img'/><target dev='{target}' bus='virtio'/>{addr}</disk>"
    )


def nic(mac: str, tap: str = "tap9") -> str:
    return (
        f"<interface type='ethernet'><mac address='{mac}'/><target dev='{tap}'/>"
        "<model type='virtio'/></interface>"
    )


def make_launcher(
    kind: str,
    tmp: Path,
    profile: str,
    *,
    eject: str = "immediate",
    faults: list[str] | None = None,
) -> Launcher:
    """Real fakechv processes (``kind="process"``) or in-process VMMs."""
    if kind == "process":
        return ProcessLauncher(profile, run_dir=tmp / "hv", eject=eject, faults=faults)
    return InProcessLauncher(profile, eject=eject, faults=faults)
