"""When fakechv closes the fds a net was handed (``fakechv.fds``, CHV v52/v53).

Each test passes pipes as a net's taps over a real socket to an in-process server and
looks at this process's own fd table: an fd the VMM keeps is a pipe end still open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakechv.vmm import EjectPolicy


def _open_pipes() -> set[str]:
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            continue
    return out


class Taps:
    """Pipes handed over as taps; ``held(name)``: does anyone still hold them."""

    def __init__(self) -> None:
        self.inodes: dict[str, list[int]] = {}

    def send(self, srv: Any, endpoint: str, body: dict[str, Any], name: str, n: int = 2) -> Any:
        pipes = [os.pipe() for _ in range(n)]
        self.inodes[name] = [os.fstat(r).st_ino for r, _ in pipes]
        try:
            return srv.put(endpoint, body, fds=[r for r, _ in pipes])
        finally:
            for r, w in pipes:
                os.close(r)
                os.close(w)

    def add_net(self, srv: Any, name: str, queues: int = 4) -> int:
        """vm.add-net of a net ``name`` with two taps; the answer's status."""
        body = {"id": name, "num_queues": queues}
        return int(self.send(srv, "vm.add-net", body, name).status)

    def held(self, name: str) -> bool:
        open_now = _open_pipes()
        states = {f"pipe:[{i}]" in open_now for i in self.inodes[name]}
        assert len(states) == 1, f"{name}: only some of its fds are open"
        return states.pop()


@pytest.fixture
def taps() -> Iterator[Taps]:
    yield Taps()


def _config(tmp_path: Path) -> dict[str, Any]:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\0")
    return {
        "cpus": {"boot_vcpus": 2, "max_vcpus": 2},  # one queue pair per vCPU
        "memory": {"size": 268435456},
        "payload": {"kernel": str(kernel)},
    }


@pytest.mark.parametrize("profile", ["v52", "v53", "head"])
def test_hot_added_net_keeps_its_taps_until_the_eject(
    fakechv_server: Any, taps: Taps, tmp_path: Path, profile: str
) -> None:
    srv = fakechv_server(profile, eject=EjectPolicy("never"))
    assert srv.put("vm.create", _config(tmp_path)).status == 204
    assert srv.put("vm.boot").status == 204
    assert taps.add_net(srv, "n0") == 200
    assert taps.held("n0")
    assert srv.put("vm.remove-device", {"id": "n0"}).status == 204
    assert taps.held("n0"), "the device holds its dups until the guest ejects it"
    assert srv.call(_eject(srv.vmm, "n0"))
    assert not taps.held("n0")


async def _eject(vmm: Any, ident: str) -> bool:
    return bool(vmm.eject_now(ident))


def test_shutdown_keeps_the_taps_of_the_config_and_delete_closes_them(
    fakechv_server: Any, taps: Taps, tmp_path: Path
) -> None:
    srv = fakechv_server("v53")
    assert srv.put("vm.create", _config(tmp_path)).status == 204
    assert taps.add_net(srv, "cold") == 204
    assert srv.put("vm.boot").status == 204  # the boot makes the device: preserved
    assert taps.add_net(srv, "hot") == 200
    assert srv.put("vm.shutdown").status == 204
    assert taps.held("cold") and taps.held("hot"), "the config keeps the originals"
    assert srv.put("vm.boot").status == 204
    assert srv.put("vm.delete").status == 204
    assert not taps.held("cold") and not taps.held("hot")


def test_removed_before_eject_goes_with_the_shutdown(
    fakechv_server: Any, taps: Taps, tmp_path: Path
) -> None:
    srv = fakechv_server("v53", eject=EjectPolicy("never"))
    assert srv.put("vm.create", _config(tmp_path)).status == 204
    assert srv.put("vm.boot").status == 204
    assert taps.add_net(srv, "n0") == 200
    assert srv.put("vm.remove-device", {"id": "n0"}).status == 204
    assert taps.held("n0")
    assert srv.put("vm.shutdown").status == 204  # the device is dropped unejected
    assert not taps.held("n0")


def test_never_created_nets_and_failed_adds_stay_open_until_exit(
    fakechv_server: Any, taps: Taps, tmp_path: Path
) -> None:
    srv = fakechv_server("v53")
    assert srv.put("vm.create", _config(tmp_path)).status == 204
    assert taps.add_net(srv, "a") == 204
    assert taps.add_net(srv, "b") == 204
    assert taps.add_net(srv, "c", 8) == 500
    assert srv.put("vm.remove-device", {"id": "b"}).status == 204
    assert srv.put("vm.delete").status == 204
    assert taps.held("a") and taps.held("b") and taps.held("c")
    srv.close()  # the process exits
    assert not taps.held("a") and not taps.held("b") and not taps.held("c")


def test_a_body_that_does_not_parse_closes_its_fds(
    fakechv_server: Any, taps: Taps, tmp_path: Path
) -> None:
    srv = fakechv_server("v53")
    assert srv.put("vm.create", _config(tmp_path)).status == 204
    assert taps.send(srv, "vm.add-net", {"id": "n", "num_queues": "x"}, "n").status == 400
    assert not taps.held("n")
    assert taps.send(srv, "vm.add-disk", {"path": "/x.img"}, "d").status == 204
    assert not taps.held("d"), "a disk takes no fds: they are closed"


def test_a_migrated_away_vm_closes_its_taps(
    fakechv_server: Any, taps: Taps, tmp_path: Path
) -> None:
    srv = fakechv_server("v53")
    assert srv.put("vm.create", _config(tmp_path)).status == 204
    assert taps.add_net(srv, "n0") == 204
    assert srv.put("vm.boot").status == 204
    srv.vmm.finish_outgoing_migration()
    assert not taps.held("n0")
