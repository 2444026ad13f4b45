"""Fault injection rules and their CLI form."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from fakechv import control
from fakechv.api import Api
from fakechv.faults import FaultRule, FaultSet, default_messages, parse_fault_spec
from fakechv.profiles import get_profile
from fakechv.vmm import Vmm
from fakechv.wire import ApiRequest


def _send(api: Api, request: ApiRequest) -> tuple[int, Any]:
    loop = asyncio.new_event_loop()
    try:
        resp = loop.run_until_complete(api.handle(request))
    finally:
        loop.close()
    return resp.status, json.loads(resp.body) if resp.body else None


def _call(api: Api, method: str, name: str, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    return _send(api, ApiRequest(method, "/api/v1/" + name, raw))


def test_parse_fault_spec_forms() -> None:
    assert parse_fault_spec("vm.add-disk:1") == FaultRule(
        "vm.add-disk", 1, 500, default_messages("vm.add-disk")
    )
    rule = parse_fault_spec("vm.add-net:2:503")
    assert (rule.endpoint, rule.count, rule.status) == ("vm.add-net", 2, 503)
    assert parse_fault_spec("vm.boot").count == 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "ENDPOINT"),
        ("vm.add-disk:x", "integers"),
        ("vm.add-disk:0", "count"),
        ("vm.add-disk:1:200", "400..599"),
        ("a:1:500:9", "ENDPOINT"),
    ],
)
def test_parse_fault_spec_errors_name_the_text(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_fault_spec(text)
    assert needle in str(exc.value) and repr(text) in str(exc.value)


def test_default_messages_are_chv_shaped() -> None:
    assert default_messages("vm.add-disk")[:3] == [
        "Error from API",
        "The disk could not be added to the VM",
        "Error from device manager",
    ]
    assert default_messages("vm.boot")[:2] == ["Error from API", "The VM could not boot"]


def test_rules_are_consumed_in_order_and_leave_state_alone() -> None:
    api = Api(Vmm(get_profile("v53")), faults=[parse_fault_spec("vm.add-disk:2:500")])
    assert _call(api, "PUT", "vm.create", {"payload": {"kernel": "/k"}})[0] == 204
    assert _call(api, "PUT", "vm.boot")[0] == 204
    _, before = _call(api, "GET", "vm.info")
    for _ in range(2):
        status, body = _call(api, "PUT", "vm.add-disk", {"path": "/a"})
        assert status == 500 and body == default_messages("vm.add-disk")
    assert _call(api, "GET", "vm.info")[1] == before
    status, body = _call(api, "PUT", "vm.add-disk", {"path": "/a"})
    assert (status, body) == (200, {"id": "_disk0", "bdf": "0000:00:03.0"})


def test_control_surface_for_faults() -> None:
    api = Api(Vmm(get_profile("v53")))
    rules = [{"endpoint": "vm.boot", "status": 503, "messages": ["Error from API", "boom"]}]
    assert _send(api, control.faults_request(rules))[0] == 204
    assert _send(api, control.faults_list_request())[1] == [
        {"endpoint": "vm.boot", "count": 1, "status": 503, "messages": ["Error from API", "boom"]}
    ]
    _call(api, "PUT", "vm.create", {"payload": {"kernel": "/k"}})
    assert _call(api, "PUT", "vm.boot") == (503, ["Error from API", "boom"])
    assert _call(api, "PUT", "vm.boot") == (204, None)
    _send(api, control.faults_request([{"endpoint": "vm.pause", "count": 3}]))
    assert _send(api, control.faults_clear_request())[0] == 204
    assert _send(api, control.faults_list_request())[1] == []
    status, body = _send(api, control.faults_request([{"endpoint": "vm.boot", "count": 0}]))
    assert status == 400 and "count" in body[0]
    status, body = _send(api, control.faults_request([{"bogus": 1}]))
    assert status == 400 and "bogus" in body[0]
    assert _send(api, ApiRequest("GET", control.CONTROL_PREFIX + "nothing"))[0] == 404

    async def through_control() -> None:  # the same calls through the async client
        ctl = control.Control(api.handle)
        await ctl.add_faults([FaultRule("vm.pause", 3), {"endpoint": "vm.boot"}])
        assert [(r["endpoint"], r["count"]) for r in await ctl.faults()] == [
            ("vm.pause", 3),
            ("vm.boot", 1),
        ]
        await ctl.clear_faults()
        assert await ctl.faults() == []
        with pytest.raises(control.ControlError) as exc:
            await ctl.add_faults([{"endpoint": "vm.boot", "count": 0}])
        assert exc.value.status == 400 and "count" in exc.value.messages[0]
        assert "PUT /fakechv/v1/faults: 400: fakechv control: " in str(exc.value)
        await ctl.set_eject("never")
        assert await ctl.eject_status() == {"mode": "never", "delay_ms": 0, "pending": {}}
        with pytest.raises(control.ControlError) as exc:
            await ctl.eject_now("_disk0")
        assert exc.value.status == 404

    asyncio.run(through_control())


def test_faultset_take_is_per_endpoint() -> None:
    fs = FaultSet([FaultRule("vm.add-net", 1), FaultRule("vm.add-disk", 1, 502)])
    assert fs.take("vm.boot") is None
    rule = fs.take("vm.add-disk")
    assert rule is not None and rule.status == 502
    assert fs.take("vm.add-disk") is None
    assert [r["endpoint"] for r in fs.to_json()] == ["vm.add-net"]
