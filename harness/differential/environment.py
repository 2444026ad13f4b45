"""Environment placeholders: the files a sequence names, made per side.

A sequence never names a real path. It names placeholders, and each side resolves them
to files of its own, under a directory of its own, before the first request:

=====================  ==========================================================
``@{kernel}``          the guest kernel (a VM that boots runs it)
``@{cmdline}``         the guest's kernel command line
``@{disk:NAME}``       a sparse image of :data:`IMAGE_SIZE` bytes (disks, pmem)
``@{file:NAME}``       the same, for any other file that must exist
``@{new:NAME}``        a path in the side's directory that does not exist yet (a
                       serial console file, a socket CHV creates)
``@{missing:NAME}``    a path that never exists
``@{dir:NAME}``        an empty directory (a snapshot destination)
``@{root}``            the side's directory itself
=====================  ==========================================================

Answers are mapped back (:meth:`SideEnvironment.unresolve`): every path of the side
becomes its placeholder again, so that the two sides' answers can be compared.
The two sides' directories have names of the same length, so a body keeps its length.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "IMAGE_SIZE",
    "PLACEHOLDER",
    "SideEnvironment",
    "placeholders_in",
    "token",
]

#: the size of every sparse image (64 MiB)
IMAGE_SIZE = 64 << 20
PLACEHOLDER = re.compile(
    r"@\{(kernel|cmdline|root|disk|file|new|missing|dir)(?::([\w.-]{1,64}))?\}"
)
_NAMED = {"disk", "file", "new", "missing", "dir"}


def token(kind: str, name: str = "") -> str:
    """The placeholder text: ``token("disk", "a")`` -> ``@{disk:a}``."""
    return f"@{{{kind}:{name}}}" if name else f"@{{{kind}}}"


def placeholders_in(texts: Iterable[str | None]) -> set[tuple[str, str]]:
    """Every ``(kind, name)`` placeholder in ``texts``."""
    out: set[tuple[str, str]] = set()
    for text in texts:
        if text:
            out |= {(m.group(1), m.group(2) or "") for m in PLACEHOLDER.finditer(text)}
    return out


def _file_name(kind: str, name: str) -> str:
    suffix = ".img" if kind == "disk" else ""
    return f"{kind}-{name}{suffix}"


@dataclass
class SideEnvironment:
    """One side's files under ``root``: made by :meth:`prepare`, substituted into
    requests by :meth:`resolve` and back out of answers by :meth:`unresolve`."""

    root: Path
    kernel: Path
    cmdline: str
    made: dict[str, str] = field(default_factory=dict)

    def path(self, kind: str, name: str) -> str:
        if kind == "kernel":
            return str(self.kernel)
        if kind == "root":
            return str(self.root)
        return str(self.root / _file_name(kind, name))

    def prepare(self, tokens: Iterable[tuple[str, str]]) -> None:
        """Make the files and directories the placeholders stand for."""
        self.root.mkdir(parents=True, exist_ok=True)
        for kind, name in sorted(tokens):
            text = token(kind, name)
            if kind == "cmdline":
                self.made[text] = self.cmdline
                continue
            path = self.path(kind, name)
            self.made[text] = path
            if kind in ("disk", "file"):
                with open(path, "wb") as fh:
                    fh.truncate(IMAGE_SIZE)
            elif kind == "dir":
                os.makedirs(path, exist_ok=True)
        self.made.setdefault(token("root"), str(self.root))

    def resolve(self, text: str) -> str:
        """``text`` with every placeholder replaced by this side's path."""

        def sub(match: re.Match[str]) -> str:
            kind, name = match.group(1), match.group(2) or ""
            if kind == "cmdline":
                return self.cmdline
            if kind in _NAMED and not name:
                return match.group(0)
            return self.path(kind, name)

        return PLACEHOLDER.sub(sub, text)

    def unresolve(self, text: str) -> str:
        """``text`` with this side's paths replaced by their placeholders (the longest
        first, then the directory itself; the kernel stays: both sides share it)."""
        pairs = sorted(
            ((v, k) for k, v in self.made.items() if k not in (token("kernel"), token("cmdline"))),
            key=lambda kv: -len(kv[0]),
        )
        for value, key in pairs:
            if value:
                text = text.replace(value, key)
        return text
