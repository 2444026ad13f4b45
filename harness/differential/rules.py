"""Sequences from the rule tests: what tests/fakechv sends fakechv, sent to both sides.

The rule tests of chv-pci-rules.md (``tests/fakechv/test_rules.py`` and friends,
:data:`RULE_TESTS`) are run with the recording plugin
(:mod:`harness.differential.recorder`); every fakechv API a test talked to becomes one
sequence with that test's requests in order. The rule section a test exercises comes
from the section headers of its file (``# ---- section 3: implicit``), else from
:data:`FILE_SECTIONS`.

The tests name made-up files (``/a``, ``/boot/vmlinux``): :func:`placeholders` puts an
environment placeholder in every place a path goes (a disk's ``path`` becomes a sparse
image, the kernel the guest kernel, a vhost-user socket one nobody listens on; a file
whose name starts with ``missing`` stays missing), the same path the same placeholder,
so that a test that names one image twice still does.
Requests to fakechv's own control surface (``/fakechv/v1/``) have no counterpart on CHV
and are left out (noted on the sequence).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from collections.abc import Sequence as Seq
from pathlib import Path
from typing import Any

import harness
from harness.differential.environment import token
from harness.differential.recorder import RECORD_OPTION
from harness.differential.sequence import Sequence, SequenceError, Step, api
from harness.errors import HarnessError

__all__ = [
    "FILE_SECTIONS",
    "PROJECT_ROOT",
    "RULE_TESTS",
    "load_recording",
    "placeholders",
    "record_rule_tests",
    "rule_sequences",
]

PROJECT_ROOT = Path(harness.__file__).resolve().parents[1]
#: the tests whose requests are the differential's rule sequences
RULE_TESTS = (
    "tests/fakechv/test_rules.py",
    "tests/fakechv/test_bad_input.py",
    "tests/fakechv/test_parity.py",
)
#: the section of the tests of a file without section headers
FILE_SECTIONS = {"test_bad_input.py": "8"}
_SECTION = re.compile(r"^# -+ section (\d+)")
_CONTROL_PREFIX = "/fakechv/"


# ----------------------------------------------------------------------------- recording


def record_rule_tests(
    out: Path,
    tests: Seq[str] = RULE_TESTS,
    *,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Run ``tests`` (paths relative to the project) with the recorder; the recording."""
    missing = [t for t in tests if not (PROJECT_ROOT / t).exists()]
    if missing:
        raise HarnessError(
            f"rule tests not found: {', '.join(missing)} (under {PROJECT_ROOT}); "
            "give a recording with --rules-recording FILE"
        )
    if progress is not None:
        progress(f"recording the rule tests' requests ({', '.join(tests)})")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "harness.differential.recorder",
        RECORD_OPTION,
        str(out),
        *tests,
    ]
    env = dict(os.environ)
    env.setdefault("CHV_REFERENCE_DIR", str(PROJECT_ROOT.parent / "shared" / "reference"))
    done = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode not in (0, 1) or not out.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise HarnessError(
            f"recording the rule tests failed (pytest exit {done.returncode}): " + " | ".join(tail)
        )
    if done.returncode == 1 and progress is not None:
        progress("warning: some rule tests failed; their requests are used all the same")
    return out


# ----------------------------------------------------------------------------- placeholders


class _Names:
    """Made-up paths to placeholder names: one name per path, readable and unique."""

    def __init__(self) -> None:
        self.by_path: dict[tuple[str, str], str] = {}
        self.used: set[str] = set()

    def name(self, kind: str, path: str) -> str:
        key = (kind, path)
        if key not in self.by_path:
            base = re.sub(r"[^\w.-]", "_", path.rstrip("/").rsplit("/", 1)[-1])[:40] or "x"
            name, n = base, 1
            while name in self.used:
                n += 1
                name = f"{base}-{n}"
            self.used.add(name)
            self.by_path[key] = name
        return self.by_path[key]


def _missing(path: str) -> bool:
    """A test's image meant not to exist: its file name starts with ``missing``."""
    return path.rstrip("/").rsplit("/", 1)[-1].startswith("missing")


def _sub(obj: dict[str, Any], key: str, kind: str, names: _Names) -> None:
    value = obj.get(key)
    if isinstance(value, str) and value and "@{" not in value:
        kind = "missing" if _missing(value) else kind
        obj[key] = token(kind, names.name(kind, value))


def _entries(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


#: where a device entry names a path, per config list: (key, placeholder kind)
_DEVICE_PATHS: dict[str, tuple[tuple[str, str], ...]] = {
    "disks": (("path", "disk"), ("vhost_socket", "missing")),
    "net": (("vhost_socket", "missing"),),
    "fs": (("socket", "missing"),),
    "pmem": (("file", "file"),),
    "vsock": (("socket", "new"),),
    "user_devices": (("socket", "missing"),),
    "generic_vhost_user": (("socket", "missing"),),
}
#: the config list of each add endpoint's body
_ADD_BODIES = {
    "vm.add-disk": "disks",
    "vm.add-net": "net",
    "vm.add-fs": "fs",
    "vm.add-pmem": "pmem",
    "vm.add-vsock": "vsock",
    "vm.add-user-device": "user_devices",
    "vm.add-generic-vhost-user": "generic_vhost_user",
}


def _device(entry: dict[str, Any], key: str, names: _Names) -> None:
    for field, kind in _DEVICE_PATHS.get(key, ()):
        _sub(entry, field, kind, names)


def _config(cfg: dict[str, Any], names: _Names) -> None:
    payload = cfg.get("payload")
    if isinstance(payload, dict):
        kernel = payload.get("kernel")
        if isinstance(kernel, str) and _missing(kernel):
            payload["kernel"] = token("missing", names.name("missing", kernel))
        elif isinstance(kernel, str):
            payload["kernel"] = token("kernel")
            payload.setdefault("cmdline", token("cmdline"))
        for field in ("firmware", "initramfs", "igvm"):
            _sub(payload, field, "file", names)
    for key in _DEVICE_PATHS:
        for entry in _entries(cfg.get(key)):
            _device(entry, key, names)
    for key in ("serial", "console", "debug_console"):
        for entry in _entries(cfg.get(key)):
            _sub(entry, "file", "new", names)
            _sub(entry, "socket", "new", names)
    memory = cfg.get("memory")
    if isinstance(memory, dict):
        for zone in _entries(memory.get("zones")):
            _sub(zone, "file", "file", names)
    for entry in _entries(cfg.get("tpm")):
        _sub(entry, "socket", "missing", names)


def _url(body: dict[str, Any], key: str, kind: str, names: _Names) -> None:
    value = body.get(key)
    if not isinstance(value, str) or "@{" in value:
        return
    for scheme in ("file://", "unix:"):
        if value.startswith(scheme) and len(value) > len(scheme):
            body[key] = scheme + token(kind, names.name(kind, value[len(scheme) :]))


def placeholders(endpoint: str, body: str | None, names: _Names) -> str | None:
    """``body`` of a request to ``endpoint`` with placeholders for its paths (the body
    as it was when it is not a JSON object or names no path)."""
    if body is None:
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(value, dict):
        return body
    before = json.dumps(value)
    if endpoint == "vm.create":
        _config(value, names)
    elif endpoint in _ADD_BODIES:
        _device(value, _ADD_BODIES[endpoint], names)
    elif endpoint == "vm.snapshot":
        _url(value, "destination_url", "dir", names)
    elif endpoint == "vm.restore":
        _url(value, "source_url", "dir", names)
    elif endpoint in ("vm.send-migration", "vm.receive-migration"):
        _url(value, "destination_url", "new", names)
        _url(value, "receiver_url", "new", names)
    after = json.dumps(value)
    return body if after == before else after


# ----------------------------------------------------------------------------- sequences


def _sections_of(path: Path) -> list[tuple[int, str]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [(n, m.group(1)) for n, line in enumerate(lines, 1) if (m := _SECTION.match(line))]


def _section(test: dict[str, Any], cache: dict[str, list[tuple[int, str]]]) -> tuple[str, ...]:
    path = str(test.get("file", ""))
    if path not in cache:
        cache[path] = _sections_of(Path(path))
    line = int(test.get("line", 0))
    found = [section for start, section in cache[path] if start <= line]
    if found:
        return (found[-1],)
    default = FILE_SECTIONS.get(Path(path).name)
    return (default,) if default else ()


def _session_steps(session: dict[str, Any]) -> tuple[list[Step], list[str]]:
    names = _Names()
    steps: list[Step] = []
    dropped: list[str] = []
    for req in session.get("requests", []):
        path = str(req.get("path", ""))
        method = str(req.get("method", "GET"))
        if path.startswith(_CONTROL_PREFIX):
            dropped.append(f"{method} {path} (fakechv's own control surface)")
            continue
        endpoint = path.removeprefix("/api/v1/") if path.startswith("/api/v1/") else path
        body = req.get("body")
        steps.append(
            api(
                method,
                endpoint,
                placeholders(endpoint, body, names) if isinstance(body, str) else None,
                fds=int(req.get("fds", 0)),
            )
        )
    return steps, dropped


def load_recording(path: Path) -> list[Sequence]:
    """The sequences of a recording (one per fakechv API a test talked to)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise HarnessError(f"cannot read the rules recording {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise HarnessError(f"{path}: not a rules recording: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        raise SequenceError(f"{path}: not a rules recording (no 'tests' list)")
    cache: dict[str, list[tuple[int, str]]] = {}
    out: list[Sequence] = []
    for test in data["tests"]:
        sessions = test.get("sessions", [])
        for n, session in enumerate(sessions, 1):
            steps, dropped = _session_steps(session)
            if not steps:
                continue
            suffix = f" #{n}" if len(sessions) > 1 else ""
            out.append(
                Sequence(
                    name=f"{test.get('nodeid', '?')}{suffix}",
                    source="rules",
                    steps=tuple(steps),
                    origin=str(test.get("nodeid", "")),
                    sections=_section(test, cache),
                    notes=tuple(f"left out: {d}" for d in dropped),
                )
            )
    return out


def rule_sequences(
    recording: Path | None, workdir: Path, *, progress: Callable[[str], None] | None = None
) -> list[Sequence]:
    """The rule sequences: from ``recording``, or by recording the rule tests now."""
    if recording is None:
        recording = record_rule_tests(workdir / "rules-recording.json", progress=progress)
    sequences = load_recording(recording)
    kept = [s for s in sequences if not _waits_for_a_sender(s)]
    if len(kept) < len(sequences) and progress is not None:
        progress(
            f"rules: {len(sequences) - len(kept)} sequences left out: they start as a "
            "migration destination (vm.receive-migration), which waits for a sender the "
            "rule tests fake in process"
        )
    return kept


def _waits_for_a_sender(sequence: Sequence) -> bool:
    first = sequence.steps[0] if sequence.steps else None
    return first is not None and first.endpoint == "vm.receive-migration"
