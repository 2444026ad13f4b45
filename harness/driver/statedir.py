"""Where a driver keeps its domains, in libvirt's CH driver layout.

Under a configurable root (``/`` for a real host, a temporary directory in
tests):

* ``var/lib/libvirt/ch/NAME.xml``: the persistent definition;
* ``run/libvirt/ch/NAME.xml``: the live definition of a running domain;
* ``run/libvirt/ch/NAME.json``: runtime facts libvirt keeps in its status XML
  (how to reach the hypervisor, the CHV profile, whether it is paused);
* ``var/lib/libvirt/ch/save/NAME.save/``: a managed save image.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.model.domain import Domain, DomainError

__all__ = ["Runtime", "StateDir"]


@dataclass
class Runtime:
    """What a daemon needs to find a running domain again."""

    hypervisor: str
    profile: str
    state: str = "running"  # running | paused
    transient: bool = False
    #: aliases whose detach timed out: CHV was asked to remove them, the guest has not
    #: ejected yet (the device stays in the live definition until CHV drops it)
    pending: list[str] = field(default_factory=list)


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.config_dir = self.root / "var/lib/libvirt/ch"
        self.run_dir = self.root / "run/libvirt/ch"
        self.save_dir = self.config_dir / "save"
        #: the runtime text last written to each file, and the file's stat after it
        self._runtimes: dict[str, tuple[str, tuple[int, int, int]]] = {}
        self._made = False

    def ensure(self) -> None:
        """Make the state directories; once made, not looked at again (a write that
        finds one removed makes them again: :meth:`_in_dirs`)."""
        if self._made:
            return
        if not self._there():
            for d in (self.config_dir, self.run_dir, self.save_dir):
                d.mkdir(parents=True, exist_ok=True)
        self._made = True

    def _there(self) -> bool:
        return os.path.isdir(self.run_dir) and os.path.isdir(self.save_dir)

    def _in_dirs(self, write: Callable[[], None]) -> None:
        """``write()`` into the state directories, made again if it failed for want
        of them (a file system cleaned behind the driver's back)."""
        self.ensure()
        try:
            write()
        except (OSError, DomainError):
            if self._there():
                raise
            self._made = False
            self.ensure()
            write()

    def persistent_path(self, name: str) -> Path:
        return self.config_dir / f"{name}.xml"

    def live_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.xml"

    def runtime_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def managed_save_path(self, name: str) -> Path:
        return self.save_dir / f"{name}.save"

    def saves_path(self, name: str) -> Path:
        """The save images of a domain that may still be restored (``virsh save``)."""
        return self.config_dir / f"{name}.saves.json"

    def save_images(self, name: str) -> list[Path]:
        path = self.saves_path(name)
        images = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        managed = self.managed_save_path(name)
        found = [Path(p) for p in images if Path(p).exists()]
        return [*found, managed] if managed.exists() else found

    def set_save_images(self, name: str, images: list[Path]) -> None:
        managed = self.managed_save_path(name).resolve()
        keep = [str(p.resolve()) for p in images if p.resolve() != managed]
        if keep:
            text = json.dumps(keep, indent=2)
            self._in_dirs(lambda: _atomic_write(self.saves_path(name), text))
        else:
            self.saves_path(name).unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------
    def persistent_names(self) -> list[str]:
        return sorted(p.stem for p in self.config_dir.glob("*.xml"))

    def live_names(self) -> list[str]:
        return sorted(p.stem for p in self.run_dir.glob("*.xml"))

    def load_persistent(self, name: str) -> Domain | None:
        path = self.persistent_path(name)
        return Domain.load(path) if path.exists() else None

    def load_live(self, name: str) -> Domain | None:
        path = self.live_path(name)
        return Domain.load(path) if path.exists() else None

    def load_runtime(self, name: str) -> Runtime | None:
        path = self.runtime_path(name)
        if not path.exists():
            return None
        return Runtime(**json.loads(path.read_text(encoding="utf-8")))

    # -- writing ---------------------------------------------------------------
    def save_persistent(self, domain: Domain) -> None:
        self._in_dirs(lambda: domain.save(self.persistent_path(domain.name)))

    def remove_persistent(self, name: str) -> None:
        self.persistent_path(name).unlink(missing_ok=True)

    def save_live(self, domain: Domain, runtime: Runtime) -> None:
        text = json.dumps(asdict(runtime), indent=2)

        def write() -> None:
            domain.save(self.live_path(domain.name))
            self._save_runtime(self.runtime_path(domain.name), text)

        self._in_dirs(write)

    def _save_runtime(self, path: Path, text: str) -> None:
        """Write the runtime facts, unless the file holds them already: most live
        changes (a hotplug) leave them as they were. The file's stat tells whether
        anything else wrote it since."""
        key = str(path)
        written = self._runtimes.get(key)
        if written is not None and written[0] == text:
            try:
                if _stamp(os.stat(path)) == written[1]:
                    return
            except OSError:
                pass
        _atomic_write(path, text)
        self._runtimes[key] = (text, _stamp(os.stat(path)))

    def remove_live(self, name: str) -> None:
        self.live_path(name).unlink(missing_ok=True)
        self.runtime_path(name).unlink(missing_ok=True)
        self._runtimes.pop(str(self.runtime_path(name)), None)


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
