"""Reading the files a scenario names, bounded and only from the folders it may use.

:func:`read_text_file` never blocks and never reads more than a limit (a FIFO, a device
or a directory is refused); :class:`DocumentAccess` says which folders a scenario may
read documents from.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fakechv.errors import brief

__all__ = ["MAX_FILE_BYTES", "DocumentAccess", "Unreadable", "read_text_file", "why_unreadable"]


#: largest scenario file and document file read (bytes)
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class DocumentAccess:
    """Which files a scenario may read as documents: those under its own folder,
    under the current directory or under one of ``roots`` (the folders a user named
    on the command line), unless ``anywhere``."""

    roots: tuple[str, ...] = ()
    anywhere: bool = False

    @classmethod
    def for_paths(cls, paths: Iterable[Path | str], anywhere: bool = False) -> DocumentAccess:
        roots = []
        for raw in paths:
            path = Path(raw)
            roots.append(str(path if path.is_dir() else path.parent))
        return cls(tuple(roots), anywhere)

    def refusal(self, scenario: Path, ref: str) -> str | None:
        """Why the file ``ref`` (relative to the scenario) may not be read (None: it may)."""
        if self.anywhere:
            return None
        allowed = [scenario.parent, Path.cwd(), *(Path(r) for r in self.roots)]
        target = (scenario.parent / ref).resolve()
        for root in allowed:
            if target.is_relative_to(root.resolve()):
                return None
        return (
            f"{brief(ref)} is outside the scenario's folder and the current directory "
            "(--allow-outside-documents reads it anyway)"
        )


class Unreadable(Exception):
    """Why a file cannot be read as scenario text (one phrase)."""


def why_unreadable(ref: str, exc: Unreadable) -> str:
    """``x.xml: no such file`` / ``/dev/zero is a character device, ...``."""
    reason = str(exc)
    return f"{brief(ref)} {reason}" if reason.startswith("is ") else f"{brief(ref)}: {reason}"


def read_text_file(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``, at most ``limit`` bytes.

    Never blocks (a FIFO is refused, not opened for a writer) and never reads more
    than ``limit`` + 1 bytes (``/dev/zero``, a growing file). Raises
    :class:`Unreadable` with the reason."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise Unreadable("no such file") from None
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        kind = stat.S_IFMT(st.st_mode)
        if kind != stat.S_IFREG:
            what = {
                stat.S_IFDIR: "a directory",
                stat.S_IFIFO: "a FIFO",
                stat.S_IFCHR: "a character device",
                stat.S_IFBLK: "a block device",
                stat.S_IFSOCK: "a socket",
            }.get(kind, "not a regular file")
            raise Unreadable(f"is {what}, not a regular file")
        if st.st_size > limit:
            raise Unreadable(f"is {st.st_size} bytes, more than the limit of {limit}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise Unreadable(f"is more than the limit of {limit} bytes")
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise Unreadable(f"line {line} is not UTF-8 text") from None
