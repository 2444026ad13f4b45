"""Bodies a buggy or hostile client sends: CHV's 400 with serde's message, never a
500, and the VMM answers as before afterwards. The control surface answers bad
input with a 400 and one line of its own, never Python exception text."""

from __future__ import annotations

from typing import Any

import pytest

from fakechv import control

CREATE = b'{"cpus":{"boot_vcpus":1,"max_vcpus":1},"payload":{"kernel":"/k"}'

BAD_BODIES = [
    (b'{"payload":{"kernel":"\\ud800"}}', "unexpected end of hex escape at line 1 column 29"),
    (
        b'{"payload":{"kernel":"\\udfff"}}',
        "lone leading surrogate in hex escape at line 1 column 28",
    ),
    (CREATE + b',"disks":[{"path":"\\ud800\\u0041"}]}', "lone leading surrogate in hex escape"),
    (b'{"cpus":{"boot_vcpus":' + b"7" * 4000 + b"}}", "number out of range at line 1 column 4022"),
    (b'{"memory":{"size":1e400}}', "number out of range at line 1 column 23"),
    (b"[" * 5000 + b"]" * 5000, "invalid type: sequence, expected u32 at line 1 column 2"),
    (CREATE + b',"disks":' + b"[" * 200 + b"]" * 200 + b"}", "expected struct DiskConfig"),
    (CREATE + b',"payload":{"kernel":"/k"}}', "duplicate field `payload`"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_json_is_a_400_and_info_keeps_answering(
    fakechv_server: Any, body: bytes, message: str
) -> None:
    srv = fakechv_server("v53")
    r = srv.request("PUT", "vm.create", raw=body, check=False)
    assert r.status == 400, r.body
    assert r.json[0] == "Failed to deserialize JSON"
    assert message in r.json[1]
    assert srv.request("GET", "vmm.ping").status == 200
    ok = srv.request("PUT", "vm.create", raw=CREATE + b"}")
    assert ok.status == 204, ok.body
    assert srv.request("GET", "vm.info").status == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"endpoint":"\\ud800"}',
        b"[1,2",
        b'{"endpoint":"vm.add-disk","count":1e999}',
        b'{"endpoint":"vm.add-disk","count":"x"}',
        b'{"endpoint":"' + b"a" * 5000 + b'"}',
        b"5",
        b'{"endpoint":"vm.add-disk","bogus":1}',
    ],
)
def test_control_surface_answers_bad_input_with_one_line(fakechv_server: Any, body: bytes) -> None:
    srv = fakechv_server("v53")
    r = srv.request("PUT", control.FAULTS_PATH, raw=body, check=False)
    assert r.status == 400
    assert isinstance(r.json, list) and len(r.json) == 1
    line = r.json[0]
    assert line.startswith("fakechv control: ") and "\n" not in line and len(line) < 200
    assert "Traceback" not in line and "Error:" not in line
    assert srv.send(control.faults_list_request()).json == []
    eject = srv.request(
        "PUT", control.EJECT_PATH, check=False, raw=b'{"mode":"delay","delay_ms":"x"}'
    )
    assert eject.status == 400 and len(eject.json[0]) < 200
