"""Values worked out from a file's bytes, kept in the user's cache between runs.

Parsing YAML costs more than the rest of a run's set-up: the CHV specs
(:mod:`fakechv.openapi`) and the scenario files (:mod:`harness.scenario.yamllines`)
are parsed once per content. A parse is kept in ``$XDG_CACHE_HOME/bdf-harness/KIND``
(default ``~/.cache``) as a :mod:`marshal` blob named by the hash of the file's bytes
and of a stamp: the Python version (marshal's format) plus whatever else the parse
depends on (the parser's version, the source of a loader of our own). An edited file,
another PyYAML or an edited loader is parsed afresh; an entry that cannot be read
(damaged, cut short, a format of another version) is parsed again and replaced. When
the cache cannot be written the value is simply worked out again next time.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["cache_dir", "kept"]

T = TypeVar("T")

_PYTHON = f"py{sys.version_info[0]}.{sys.version_info[1]}-marshal{marshal.version}"


def cache_dir(kind: str) -> Path:
    """Where the entries of ``kind`` are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bdf-harness" / kind


def _plain(value: Any) -> Any:
    return value


def kept(
    kind: str,
    data: bytes,
    stamp: str,
    compute: Callable[[], T],
    encode: Callable[[T], Any] = _plain,
    decode: Callable[[Any], T] = _plain,
) -> T:
    """``compute()``, or the value kept for these ``data`` bytes and ``stamp``.

    ``encode`` turns the value into what marshal takes, ``decode`` turns a kept blob
    back into a value; each call gets a value of its own (never one shared with
    another caller). A value marshal does not take is not kept.
    """
    digest = hashlib.sha256(b"%s\0%s\0" % (_PYTHON.encode(), stamp.encode()))
    digest.update(data)
    entry = cache_dir(kind) / f"{digest.hexdigest()}.marshal"
    try:
        blob = entry.read_bytes()
    except OSError:
        pass
    else:
        with contextlib.suppress(Exception):  # damaged or foreign: work it out again
            return decode(marshal.loads(blob))
    value = compute()
    with contextlib.suppress(OSError, ValueError):
        _write(entry, marshal.dumps(encode(value)))
    return value


def _write(entry: Path, blob: bytes) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".entry-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, entry)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
