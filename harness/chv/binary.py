"""A ``cloud-hypervisor`` binary: which one, which release, and what a VM needs to boot
under it here.

:func:`find_binary` picks the binary (``--chv-binary``, ``$CHV_BINARY``, else the
shared v53.0 build beside the project), :func:`identify` runs its ``--version`` and
tells fakechv from a real CHV, and :func:`profile_for_version` maps the release to the
capability row the driver uses. :class:`Guest` is the kernel and command line a VM boots
(``--guest-kernel``/``--guest-cmdline``, ``$CHV_GUEST_KERNEL``/``$CHV_GUEST_CMDLINE``,
else the shared guest), and the marker it prints on its serial console once its ACPI
and PCI hot-plug are up.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import harness
from harness.chv.capabilities import UnknownRelease, profile_for_version
from harness.errors import HarnessError

__all__ = [
    "BINARY_ENV",
    "GUEST_CMDLINE_ENV",
    "GUEST_KERNEL_ENV",
    "READY_MARKER",
    "ChvBinary",
    "Guest",
    "NotRealChv",
    "find_binary",
    "identify",
    "shared_chv_dir",
]

BINARY_ENV = "CHV_BINARY"
GUEST_KERNEL_ENV = "CHV_GUEST_KERNEL"
GUEST_CMDLINE_ENV = "CHV_GUEST_CMDLINE"
#: what the shared guest kernel prints when PCI hot-plug works (../shared/chv/README.md)
READY_MARKER = "CHV-GUEST-READY"


class NotRealChv(HarnessError):
    """The binary is not a usable real Cloud Hypervisor (missing, fakechv, unknown)."""


def shared_chv_dir() -> Path:
    """``../shared/chv`` beside the checkout."""
    return Path(harness.__file__).resolve().parents[2] / "shared" / "chv"


def find_binary(given: str | os.PathLike[str] | None = None) -> Path:
    """The binary to run: ``given``, else ``$CHV_BINARY``, else the shared v53.0 build."""
    if given:
        return Path(given)
    env = os.environ.get(BINARY_ENV)
    if env:
        return Path(env)
    return shared_chv_dir() / "cloud-hypervisor-v53.0"


@dataclass(frozen=True)
class ChvBinary:
    """A real ``cloud-hypervisor`` binary and what its ``--version`` says."""

    path: Path
    #: the first line of ``--version``: ``cloud-hypervisor v53.0.0``
    banner: str
    #: the capability row its release takes (``v52``, ``v53``, ``head``)
    profile: str

    def describe(self) -> str:
        """``cloud-hypervisor v53.0.0 (/path/to/binary)`` for reports."""
        return f"{self.banner} ({self.path})"


def _is_fakechv(path: Path) -> bool:
    """fakechv's commands are Python scripts; a real CHV is an ELF executable."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return not head.startswith(b"\x7fELF") and b"fakechv" in head


def identify(path: Path, *, timeout: float = 10.0) -> ChvBinary:
    """Run ``path --version``; the binary if it is a real CHV, NotRealChv (saying why)
    if it is missing, not executable, fakechv, or of a release the driver does not know."""
    if not path.is_file():
        raise NotRealChv(
            f"no cloud-hypervisor binary at {path} (give --chv-binary PATH or set {BINARY_ENV})"
        )
    if not os.access(path, os.X_OK):
        raise NotRealChv(f"{path} is not executable")
    if _is_fakechv(path):
        raise NotRealChv(f"{path} is fakechv, not a real Cloud Hypervisor")
    try:
        out = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NotRealChv(f"{path} --version failed: {exc}") from None
    banner = (out.stdout or "").strip().splitlines()[0] if (out.stdout or "").strip() else ""
    if out.returncode != 0 or not banner:
        raise NotRealChv(f"{path} --version exited with {out.returncode}: {out.stderr.strip()}")
    return ChvBinary(path, banner, _profile(banner))


def _profile(banner: str) -> str:
    try:
        return profile_for_version(banner)
    except UnknownRelease as exc:
        raise NotRealChv(str(exc)) from None


@dataclass(frozen=True)
class Guest:
    """What a VM boots under real CHV: a kernel and its command line."""

    kernel: Path
    cmdline: str

    @classmethod
    def find(cls, kernel: str | None = None, cmdline: str | None = None) -> Guest:
        """The given kernel/command line, else the environment, else the shared guest."""
        shared = shared_chv_dir()
        kernel_path = Path(kernel or os.environ.get(GUEST_KERNEL_ENV) or shared / "guest-vmlinux")
        text = cmdline if cmdline is not None else os.environ.get(GUEST_CMDLINE_ENV)
        if text is None:
            try:
                text = (shared / "guest-cmdline.txt").read_text().strip()
            except OSError:
                text = "console=ttyS0"
        if not kernel_path.is_file():
            raise NotRealChv(
                f"no guest kernel at {kernel_path} (give --guest-kernel or set {GUEST_KERNEL_ENV})"
            )
        return cls(kernel_path, text)
