"""The driver's own CHV table (harness.chv.capabilities) agrees with what fakechv
emulates: the same releases, the same kinds taking ``pci_device_id``, the same config
keys, add endpoints and fixed ids, and the same device-tree prefix."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from fakechv.api import Api
from fakechv.devices import DEVICE_KINDS
from fakechv.profiles import PROFILES
from fakechv.vmm import Vmm
from fakechv.wire import ApiRequest
from harness.chv.capabilities import (
    CAPABILITIES,
    HOTPLUG_KINDS,
    KINDS,
    UnknownRelease,
    capabilities,
)
from harness.chv.info import VIRTIO_NODE_PREFIX, chv_bdfs
from harness.model.domain import CHV_CONFIG_KEYS
from harness.scenario.model import KNOWN_PROFILES


def test_one_row_per_fakechv_release() -> None:
    assert list(CAPABILITIES) == list(PROFILES)
    assert KNOWN_PROFILES == tuple(CAPABILITIES)


@pytest.mark.parametrize("release", sorted(PROFILES))
def test_release_row_agrees_with_the_profile(release: str) -> None:
    caps, profile = CAPABILITIES[release], PROFILES[release]
    assert caps.profile == profile.name
    assert caps.device_id_kinds == profile.pci_device_id_kinds
    assert caps.rng_console_ids == profile.rng_console_have_id
    assert caps.host_bridge_all_segments == profile.host_bridge_all_segments


@pytest.mark.parametrize("name", sorted(KINDS))
def test_kind_row_agrees_with_fakechv(name: str) -> None:
    ours, theirs = KINDS[name], DEVICE_KINDS[name]
    assert ours.config_key == theirs.config_key
    assert ours.add_endpoint == theirs.add_endpoint
    assert ours.fixed_id == theirs.fixed_id
    if ours.create_as:
        # vm.create takes a list exactly for the kinds CHV keeps several of
        assert (ours.create_as == "list") == (not theirs.single)


def test_every_kind_that_takes_an_address_is_known() -> None:
    for caps in CAPABILITIES.values():
        unknown = caps.device_id_kinds - set(KINDS) - {"rtc"}
        assert unknown == set(), f"{caps.profile}: {sorted(unknown)}"


def test_every_device_class_has_a_kind_and_hotplug_kinds_have_endpoints() -> None:
    keys = {k.config_key for k in KINDS.values()}
    assert set(CHV_CONFIG_KEYS.values()) <= keys
    assert HOTPLUG_KINDS == {
        k.name
        for k in KINDS.values()
        if k.add_endpoint and k.config_key in CHV_CONFIG_KEYS.values()
    }
    assert {"disk", "net", "fs", "pmem", "vsock", "vdpa", "device"} == HOTPLUG_KINDS


@pytest.mark.parametrize("release", sorted(PROFILES))
def test_virtio_node_prefix_is_fakechvs(release: str) -> None:
    """A booted VM's disk sits on a ``_virtio-pci-<id>`` node, as the harness reads it."""
    api = Api(Vmm(PROFILES[release]))

    async def info() -> dict[str, Any]:
        body = {"payload": {"kernel": "/k"}, "disks": [{"path": "/d", "id": "vda"}]}
        for path, data in (("vm.create", json.dumps(body).encode()), ("vm.boot", b"")):
            resp = await api.handle(ApiRequest("PUT", f"/api/v1/{path}", data))
            assert resp.status == 204, resp.body
        resp = await api.handle(ApiRequest("GET", "/api/v1/vm.info", b""))
        decoded = json.loads(resp.body)
        assert isinstance(decoded, dict)
        return decoded

    tree = asyncio.run(info())["device_tree"]
    assert VIRTIO_NODE_PREFIX + "vda" in tree
    assert "vda" in chv_bdfs({"device_tree": tree})


def test_unknown_release_names_the_known_ones() -> None:
    with pytest.raises(UnknownRelease, match=r"v99.*known: v51, v52, v53, head"):
        capabilities("v99")
