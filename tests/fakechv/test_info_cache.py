"""vm.info's answer is kept until the VMM changes: by a request, a rollback, a guest's
eject or a control call; a change that does not say so is caught in verify mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from fakechv import control
from fakechv.api import Api
from fakechv.profiles import get_profile
from fakechv.vmm import Vmm
from fakechv.wire import ApiRequest


class _Counting(Vmm):
    """A VMM that counts how often vm.info's body is made."""

    made = 0

    def info(self) -> dict[str, Any]:
        _Counting.made += 1
        return super().info()


@pytest.fixture
def api() -> Iterator[Api]:
    _Counting.made = 0
    api = Api(_Counting(get_profile("v53")))
    api._verify_info = False  # as a fakechv outside the tests runs
    yield api


def _call(api: Api, method: str, name: str, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    return _send(api, ApiRequest(method, "/api/v1/" + name, raw))


def _send(api: Api, request: ApiRequest) -> tuple[int, Any]:
    resp = asyncio.get_event_loop_policy().get_event_loop().run_until_complete(api.handle(request))
    return resp.status, json.loads(resp.body) if resp.body else None


def _tree_ids(api: Api) -> set[str]:
    status, info = _call(api, "GET", "vm.info")
    assert status == 200
    return set(info["device_tree"])


@pytest.fixture(autouse=True)
def _loop() -> Iterator[None]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def _booted(api: Api) -> None:
    assert _call(api, "PUT", "vm.create", {"payload": {"kernel": "/k"}})[0] == 204
    assert _call(api, "PUT", "vm.boot")[0] == 204


def test_the_answer_is_made_once_while_nothing_changes(api: Api) -> None:
    _booted(api)
    first = _call(api, "GET", "vm.info")
    assert _call(api, "GET", "vm.info") == first
    assert _call(api, "GET", "vm.counters")[0] == 200  # a read changes nothing either
    assert _call(api, "GET", "vm.info") == first
    assert _Counting.made == 1
    assert _call(api, "PUT", "vm.add-disk", {"path": "/a", "id": "d1"})[0] == 200
    status, info = _call(api, "GET", "vm.info")
    assert status == 200 and _Counting.made == 2
    assert [d["id"] for d in info["config"]["disks"]] == ["d1"]


def test_a_refused_request_shows_the_state_it_rolled_back_to(api: Api) -> None:
    _booted(api)
    _, before = _call(api, "GET", "vm.info")
    assert _call(api, "PUT", "vm.add-disk", {"path": "/a", "pci_device_id": 0})[0] >= 400
    assert _call(api, "GET", "vm.info") == (200, before)


def test_a_delayed_eject_shows_when_the_guest_ejects(api: Api) -> None:
    _booted(api)
    assert _call(api, "PUT", "vm.add-disk", {"path": "/a", "id": "d1"})[0] == 200
    ctl = control.Control(api.handle)
    loop = asyncio.get_event_loop_policy().get_event_loop()
    loop.run_until_complete(ctl.set_eject("delay", 20))
    assert _call(api, "PUT", "vm.remove-device", {"id": "d1"})[0] == 204
    assert "d1" in _tree_ids(api)  # removed, not yet ejected
    loop.run_until_complete(asyncio.sleep(0.1))  # the guest ejects, no request between
    assert "d1" not in _tree_ids(api)


def test_a_change_that_does_not_move_the_version_is_caught_when_verifying(api: Api) -> None:
    _booted(api)
    _call(api, "GET", "vm.info")
    api.vmm.vm.state = "Paused"  # type: ignore[union-attr]  # around the API: no version move
    assert _call(api, "GET", "vm.info")[1]["state"] == "Running"  # the kept answer
    api._verify_info = True
    status, body = _call(api, "GET", "vm.info")
    assert status == 500 and "stale" in body[-1]
