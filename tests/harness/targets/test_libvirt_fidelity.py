"""What libvirt 11.3's CH driver sends, replayed against fakechv at the API level.

Each test here is a request sequence that stock libvirt (built by tools/build-libvirt.sh and
driven by harness.targets.libvirt) really sends, and the answer real Cloud Hypervisor gives.
Each answer of fakechv here matches what real CHV gives (checked in its source).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

#: vm.create as libvirt 11.3 builds it for a domain with <serial type='pty'> (ch_monitor.c:
#: virCHMonitorBuildVMJson: cpus, memory, payload, serial {mode: Pty}, disks without id)
LIBVIRT_CREATE: dict[str, Any] = {
    "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
    "memory": {"size": 2147483648},
    "payload": {"kernel": "/etc/CLOUDHV.fd"},
    "serial": {"mode": "Pty"},
    "disks": [{"path": "/var/lib/libvirt/storage-pools/nfs-share/nixos.img"}],
}


def _booted(fakechv_server: Any, profile: str = "v53") -> Any:
    chv = fakechv_server(profile)
    assert chv.put("vm.create", LIBVIRT_CREATE).status == 204
    assert chv.put("vm.boot").status == 204
    return chv


def test_libvirt_create_and_boot_accepted(fakechv_server: Any) -> None:
    chv = _booted(fakechv_server)
    info = chv.get("vm.info")
    assert info.status == 200
    assert info.json["state"] == "Running"
    assert info.json["config"]["serial"]["mode"] == "Pty"
    assert [d["path"] for d in info.json["config"]["disks"]] == [LIBVIRT_CREATE["disks"][0]["path"]]


@pytest.mark.parametrize("profile", ["v51", "v52", "v53", "head"])
def test_pty_serial_path_in_vm_info(fakechv_server: Any, profile: str) -> None:
    chv = _booted(fakechv_server, profile)
    serial = chv.get("vm.info").json["config"]["serial"]
    assert isinstance(serial.get("file"), str)
    assert serial["file"].startswith("/dev/pts/")


#: vm.add-net as libvirt 11.3 sends it for <interface type='ethernet'> with <driver
#: queues='1'/> (ch_monitor.c virCHMonitorBuildNetJson: id net_N, mac, 2 * queues), with
#: one tap fd per queue pair passed by SCM_RIGHTS (ch_process.c chProcessAddNetworkDevices)
LIBVIRT_ADD_NET: dict[str, Any] = {"id": "net_0", "mac": "52:54:00:e5:b8:01", "num_queues": 2}


def _with_tap_fd(fakechv_server: Any) -> Any:
    chv = fakechv_server("v53")
    body = {k: v for k, v in LIBVIRT_CREATE.items() if k != "serial"}
    assert chv.put("vm.create", body).status == 204
    fd = os.open(os.devnull, os.O_RDWR)
    try:
        assert chv.put("vm.add-net", LIBVIRT_ADD_NET, fds=[fd]).status == 204
    finally:
        os.close(fd)
    assert chv.put("vm.boot").status == 204
    return chv


def test_libvirt_add_net_with_tap_fd(fakechv_server: Any) -> None:
    chv = _with_tap_fd(fakechv_server)
    nets = chv.get("vm.info").json["config"]["net"]
    assert [(n["id"], n["mac"], n["num_queues"]) for n in nets] == [
        ("net_0", "52:54:00:e5:b8:01", 2)
    ]
    assert chv.vmm.net_fds == {"net_0": 1}


def test_add_net_fds_serialized_as_invalid_fds(fakechv_server: Any) -> None:
    chv = _with_tap_fd(fakechv_server)
    assert chv.get("vm.info").json["config"]["net"][0].get("fds") == [-1]
