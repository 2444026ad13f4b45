"""Generated requests against fakechv's API, in process (about 3,000 requests).

For every request: no exception escapes ``Api.handle`` and no fakechv-internal
error is reported, the status is one the release can produce, and a rejected
request leaves ``vm.info`` byte-for-byte unchanged - except for the one trace
CHV itself leaves (a virtio hot-add that fails at slot allocation keeps the
device node it created, without a BDF; see fakechv.vmm).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakechv.api import Api
from fakechv.errors import PANIC_ANSWER
from fakechv.profiles import PROFILES, get_profile
from fakechv.vmm import EjectPolicy, Vmm
from fakechv.wire import ApiRequest

STATUSES = {
    "v51": {200, 204, 400, 404, 500},
    "v52": {200, 204, 400, 404, 500},
    "v53": {200, 204, 400, 404, 500},
    "head": {200, 204, 400, 404, 409, 500},
    "cyberus": {200, 204, 400, 404, 500},
}
SKIP = {"vm.send-migration", "vm.receive-migration"}  # need a peer process
ENDPOINTS = [
    *sorted({n for p in PROFILES.values() for n in p.routes} - SKIP),
    "vm.coredump",
    "vmm.nmi",
    "vm.bogus",
]

ROUTES = PROFILES["v53"].routes
#: endpoints that change PCI state are drawn more often
WEIGHTED = [*ENDPOINTS, *[n for n in ENDPOINTS if n.startswith("vm.add-")] * 3]
WEIGHTED += ["vm.remove-device"] * 6 + ["vm.boot", "vm.reboot", "vm.create"] * 2
#: a minimal valid body for each endpoint that takes one
BASE: dict[str, dict[str, Any]] = {
    "vm.add-disk": {"path": "/d"},
    "vm.add-net": {"tap": "tap0"},
    "vm.add-fs": {"tag": "fs", "socket": "/fs", "num_queues": 1, "queue_size": 128},
    "vm.add-pmem": {"file": "/p"},
    "vm.add-vsock": {"cid": 3, "socket": "/v"},
    "vm.add-vdpa": {"path": "/dev/vhost-vdpa-0", "num_queues": 1},
    "vm.add-device": {"path": "/sys/x"},
    "vm.add-user-device": {"socket": "/u"},
    "vm.add-generic-vhost-user": {"socket": "/g", "device_type": 26, "queue_sizes": [128]},
    "vm.remove-device": {"id": "_disk0"},
    "vm.resize": {"desired_vcpus": 2},
    "vm.resize-disk": {"id": "_disk0", "desired_size": 1 << 20},
    "vm.resize-zone": {"id": "z", "desired_ram": 1 << 20},
    "vm.snapshot": {"destination_url": "file:///nonexistent"},
    "vm.restore": {"source_url": "file:///nonexistent"},
}

small_ints = st.integers(min_value=0, max_value=33)
bad_ints = st.sampled_from([-1, 255, 256, 65536, 2**32, 2**64])
idents = st.sampled_from(
    ["_disk0", "_disk1", "_net1", "_net2", "_vfio1", "d", "n", "__rng", "__console", "x", ""]
)
wrong = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.floats(0, 5),
    bad_ints,
    st.just([1]),
    st.just({"a": 1}),
)
mods = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(idents, idents, idents, wrong),
        "pci_segment": st.one_of(st.integers(0, 3), st.just(0), st.just(0), wrong),
        "pci_device_id": st.one_of(small_ints, small_ints, small_ints, wrong),
        "iommu": st.one_of(st.just(False), st.just(False), st.booleans(), wrong),
        "unknown_field": st.integers(),
    },
)
vm_config = st.fixed_dictionaries(
    {"payload": st.just({"kernel": "/k"})},
    optional={
        "disks": st.lists(mods.map(lambda m: {"path": "/d", **m}), max_size=3),
        "net": st.lists(mods.map(lambda m: {"tap": "t", **m}), max_size=2),
        "devices": st.lists(mods.map(lambda m: {"path": "/sys/d", **m}), max_size=2),
        "console": st.sampled_from([{"mode": "Off"}, {"mode": "Tty"}, {"mode": "Bogus"}]),
        "rng": st.one_of(st.just({"src": "/dev/urandom"}), mods.map(lambda m: {"src": "/r", **m})),
        "platform": st.fixed_dictionaries({"num_pci_segments": st.integers(0, 3)}),
        "vsock": mods.map(lambda m: {"cid": 3, "socket": "/v", **m}),
        "pvpanic": st.booleans(),
        "iommu": st.booleans(),
        "memory": st.just({"size": 1 << 30, "shared": True}),
    },
)
garbage = st.sampled_from([b"{", b"[]", b"null", b'{"id": 5}', b"\xff", b'{"a":1} x', b"{}"])


@st.composite
def request(draw: st.DrawFn) -> tuple[str, str, bytes]:
    name = draw(st.sampled_from(WEIGHTED))
    route = ROUTES.get(name)
    method = route.method if route else "PUT"
    if draw(st.integers(0, 19)) == 19:
        method = draw(st.sampled_from(["GET", "PUT", "POST", "DELETE"]))
    takes_body = route.body if route else False
    if draw(st.integers(0, 19)) == 19:
        takes_body = not takes_body
    if not takes_body:
        return name, method, b""
    if draw(st.integers(0, 7)) == 7:
        return name, method, draw(garbage)
    if name == "vm.create":
        return name, method, json.dumps(draw(vm_config)).encode()
    body = {**BASE.get(name, {}), **draw(mods)}
    return name, method, json.dumps(body).encode()


COUNT = {"requests": 0}


def _run(api: Api, loop: asyncio.AbstractEventLoop, method: str, name: str, raw: bytes) -> Any:
    return loop.run_until_complete(api.handle(ApiRequest(method, "/api/v1/" + name, raw)))


def _info(api: Api, loop: asyncio.AbstractEventLoop) -> bytes:
    return bytes(_run(api, loop, "GET", "vm.info", b"").body)


#: failures after which CHV keeps what it did before failing: a boot or reboot whose
#: devices were made before the locks, the kernel or a slot failed (ids, image types and
#: MACs stay written, and the VM stays created), a panicked VMM thread
_KEEPS_STATE = (
    "Error locking disk images: Another instance likely holds a lock",
    "Cannot open kernel file",
    "Could not reserve the PCI device ID",
    "Cannot open disk path",
    "API response receive error",
)


def _allowed_trace(before: bytes, after: bytes, messages: list[str], name: str = "") -> bool:
    if name in ("vm.boot", "vm.reboot", "vm.restore") and any(m in messages for m in _KEEPS_STATE):
        return True
    if not messages or "Failed to find an available PCI device ID" not in messages:
        return False
    if not before.startswith(b"{") or not after.startswith(b"{"):
        return False
    b, a = json.loads(before), json.loads(after)
    if b["config"] != a["config"]:
        return False
    new = set(a["device_tree"]) - set(b["device_tree"])
    return (
        len(new) == 1
        and set(b["device_tree"]) <= set(a["device_tree"])
        and not a["device_tree"][new.pop()].get("pci_bdf")
    )


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    profile=st.sampled_from(sorted(PROFILES)),
    eject=st.sampled_from(["immediate", "never"]),
    setup=st.one_of(st.none(), vm_config),
    boot=st.booleans(),
    requests=st.lists(request(), min_size=15, max_size=30),
)
def test_generated_requests(
    profile: str,
    eject: str,
    setup: dict[str, Any] | None,
    boot: bool,
    requests: list[tuple[str, str, bytes]],
) -> None:
    api = Api(Vmm(get_profile(profile), eject=EjectPolicy(eject)))
    loop = asyncio.new_event_loop()
    try:
        if setup is not None:
            _run(api, loop, "PUT", "vm.create", json.dumps(setup).encode())
            if boot:
                _run(api, loop, "PUT", "vm.boot", b"")
        for name, method, raw in requests:
            if name in ("vm.info", "vmm.ping", "vm.counters") and method == "PUT":
                method = "GET"
            before = _info(api, loop)
            resp = _run(api, loop, method, name, raw)
            COUNT["requests"] += 1
            assert resp.status in STATUSES[profile], (name, resp.status, resp.body)
            messages = json.loads(resp.body) if resp.body else []
            if resp.status >= 400 and resp.body:
                assert isinstance(messages, list) and all(isinstance(m, str) for m in messages)
            assert not any("fakechv: " in str(m) and "panics" not in str(m) for m in messages), (
                name,
                raw,
                messages,
            )
            assert "Internal Server Error" not in messages, (name, raw, messages)
            if messages == PANIC_ANSWER:
                break  # CHV's VMM thread panicked (v52): the process is on its way out
            if resp.status >= 400:
                after = _info(api, loop)
                assert after == before or _allowed_trace(before, after, messages, name), (
                    name,
                    raw,
                    messages,
                )
            if name == "vmm.shutdown" and resp.status == 200:
                break
    finally:
        loop.close()


def test_enough_requests_were_generated() -> None:
    if COUNT["requests"] == 0:  # run alone: generate them now
        test_generated_requests()
    assert COUNT["requests"] >= 2000
