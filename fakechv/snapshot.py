"""The snapshot directory of ``vm.snapshot`` / ``vm.restore`` (``file:///dir`` URLs).

CHV writes ``config.json`` (the VmConfig) and ``state.json`` (the snapshot
tree; fakechv keeps the parts that matter for BDFs: the device tree and
``device_id_cnt``) into an existing directory, plus the guest memory
(``memory-ranges`` and the memory files; fakechv writes an empty range table).
URL handling and messages follow ``url_to_path`` (vmm/src/migration/mod.rs@v53.0):
``Could not extract path from URL: X`` and ``Destination is not a directory: "P"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fakechv.errors import debug_str, io_error_text

__all__ = [
    "CONFIG_FILE",
    "MEMORY_RANGES_FILE",
    "STATE_FILE",
    "SnapshotError",
    "read_snapshot",
    "url_to_path",
    "write_snapshot",
]

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
MEMORY_RANGES_FILE = "memory-ranges"


class SnapshotError(Exception):
    """A snapshot URL or directory CHV would refuse; ``messages`` is the inner chain."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(": ".join(messages))
        self.messages = messages


def url_to_path(url: str) -> Path:
    """``file:///dir`` -> ``/dir``, which must be an existing directory."""
    if not url.startswith("file://"):
        raise SnapshotError([f"Could not extract path from URL: {url}"])
    path = Path(url[len("file://") :])
    if not path.is_dir():
        raise SnapshotError([f"Destination is not a directory: {debug_str(str(path))}"])
    return path


def write_snapshot(url: str, config: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write the snapshot files into the directory of ``url``; returns the directory."""
    path = url_to_path(url)
    try:
        (path / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
        (path / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
        (path / MEMORY_RANGES_FILE).write_bytes(b"")
    except OSError as exc:
        raise SnapshotError(["Error creating VM config snapshot file", str(exc)]) from None
    return path


def read_snapshot(url: str, *, context: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read ``(config, state)`` back from the directory of ``url``."""
    path = url_to_path(url)
    out: list[dict[str, Any]] = []
    # recv_vm_config / recv_vm_state (vmm/src/migration/mod.rs@v53.0:53-90)
    for name, what in ((CONFIG_FILE, "config"), (STATE_FILE, "state")):
        file = path / name
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            error = io_error_text(exc)
            opening = f"Error opening VM {what} snapshot file {debug_str(str(file))}"
            raise SnapshotError([opening, error] if context else [error]) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SnapshotError([f"Error deserialising VM {what} snapshot", str(exc)]) from None
        if not isinstance(data, dict):
            raise SnapshotError([f"Error deserializing {file}", "expected a JSON object"])
        out.append(data)
    return out[0], out[1]
