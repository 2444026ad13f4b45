"""Generated sequences: what nobody wrote down, drawn by hypothesis.

A sequence is a VM's life in a few requests: ``vm.create`` with a drawn config (disks,
nets, rng, pmem, segments, explicit and clashing ``pci_device_id``, ids valid and not),
then a mix of ``vm.boot``, hot-adds of each kind with valid and invalid bodies and
addresses, ``vm.remove-device`` of known, unknown and unremovable ids, ``vm.reboot``,
``vm.pause`` / ``vm.resume``, ``vm.shutdown``, ``vm.delete``, ``vm.info``,
``vm.counters``, bodies serde refuses, and the odd request for a route that does not
exist. Images are drawn from a small pool, so that two devices sometimes share one
(CHV's image lock), and some name files that do not exist.

:func:`generate` is deterministic for a given count and seed (hypothesis with
``derandomize`` and no example database), so CI sends the same sequences every run;
``--seed N`` draws others.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from harness.differential.environment import token
from harness.differential.sequence import Sequence, Step, api

__all__ = ["DEFAULT_COUNT", "generate", "sequences"]

#: sequences per run in CI
DEFAULT_COUNT = 240
MEMORY = 256 << 20

_disk_file = st.sampled_from(
    [token("disk", f"d{i}") for i in range(6)] + [token("missing", "gone")]
)
_slot = st.one_of(
    st.none(),
    st.none(),
    st.integers(1, 8),
    st.sampled_from([0, 31, 32, 255]),
)
_segment = st.sampled_from([0, 0, 0, 1, 2])
_user_id = st.sampled_from(["a", "b", "data", "n1", "__bad", "_disk0", "_net1"])


@st.composite
def _pci(draw: Any, entry: dict[str, Any]) -> dict[str, Any]:
    if draw(st.booleans()):
        entry["id"] = draw(_user_id)
    slot = draw(_slot)
    if slot is not None:
        entry["pci_device_id"] = slot
    segment = draw(_segment)
    if segment:
        entry["pci_segment"] = segment
    return entry


@st.composite
def _disk(draw: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": draw(_disk_file)}
    if draw(st.integers(0, 5)) == 0:
        entry["readonly"] = True
    return draw(_pci(entry))


@st.composite
def _net(draw: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    choice = draw(st.integers(0, 5))
    if choice == 0:
        entry["mac"] = "52:54:00:12:34:56"
    elif choice == 1:
        entry["tap"] = draw(st.sampled_from(["tapa", "tapb", "x" * 20]))
    return draw(_pci(entry))


@st.composite
def _config(draw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "payload": {"kernel": token("kernel"), "cmdline": token("cmdline")},
        "memory": {"size": MEMORY},
    }
    console = draw(st.sampled_from([None, "Off", "Off", "Tty", "Null"]))
    if console is not None:
        cfg["console"] = {"mode": console}
    if draw(st.booleans()):
        cfg["serial"] = {"mode": "File", "file": token("new", "serial")}
    disks = draw(st.lists(_disk(), max_size=4))
    if disks:
        cfg["disks"] = disks
    nets = draw(st.lists(_net(), max_size=2))
    if nets:
        cfg["net"] = nets
    if draw(st.integers(0, 3)) == 0:
        cfg["rng"] = draw(_pci({"src": "/dev/urandom"}))
    if draw(st.integers(0, 4)) == 0:
        cfg["pmem"] = [draw(_pci({"file": token("file", "p0")}))]
    segments = draw(st.sampled_from([None, None, 1, 2, 3, 0]))
    if segments is not None:
        cfg["platform"] = {"num_pci_segments": segments}
    if draw(st.integers(0, 6)) == 0:
        cfg["cpus"] = {"boot_vcpus": 2, "max_vcpus": draw(st.sampled_from([1, 2, 4]))}
    return cfg


_SIMPLE = ["vm.boot", "vm.shutdown", "vm.reboot", "vm.pause", "vm.resume", "vm.delete"]


@st.composite
def _step(draw: Any) -> Step:
    kind = draw(
        st.sampled_from(
            ["simple"] * 4
            + ["info"] * 3
            + ["add-disk"] * 4
            + ["add-net"] * 2
            + ["add-pmem", "add-vsock", "add-device", "add-fs"]
            + ["remove"] * 3
            + ["counters", "ping", "bad-body", "odd-route"]
        )
    )
    if kind == "simple":
        return api("PUT", draw(st.sampled_from(_SIMPLE)))
    if kind == "info":
        return api("GET", "vm.info")
    if kind == "counters":
        return api("GET", "vm.counters")
    if kind == "ping":
        return api("GET", "vmm.ping")
    if kind == "add-disk":
        return api("PUT", "vm.add-disk", draw(_disk()))
    if kind == "add-net":
        return api("PUT", "vm.add-net", draw(_net()))
    if kind == "add-pmem":
        return api("PUT", "vm.add-pmem", draw(_pci({"file": token("file", "p1")})))
    if kind == "add-vsock":
        return api("PUT", "vm.add-vsock", draw(_pci({"cid": 3, "socket": token("new", "v")})))
    if kind == "add-device":
        return api(
            "PUT", "vm.add-device", draw(_pci({"path": "/sys/bus/pci/devices/0000:00:1f.7"}))
        )
    if kind == "add-fs":
        fs = {"tag": "t", "socket": token("missing", "fs"), "num_queues": 1, "queue_size": 128}
        return api("PUT", "vm.add-fs", draw(_pci(fs)))
    if kind == "remove":
        ident = draw(
            st.sampled_from(["_disk0", "_disk1", "_disk2", "_net1", "a", "data", "__rng", "nope"])
        )
        return api("PUT", "vm.remove-device", {"id": ident})
    if kind == "bad-body":
        endpoint, body = draw(
            st.sampled_from(
                [
                    ("vm.add-disk", '{"path": 5}'),
                    ("vm.add-disk", '{"path": "x", "pci_device_id": -1}'),
                    ("vm.add-net", '{"mac": "zz"}'),
                    ("vm.add-disk", '{"path": "x",}'),
                    ("vm.remove-device", "{}"),
                    ("vm.create", "[]"),
                    ("vm.add-disk", ""),
                ]
            )
        )
        return api("PUT", endpoint, body)
    method, endpoint = draw(
        st.sampled_from([("GET", "vm.bogus"), ("PUT", "vm.info"), ("GET", "vm.boot")])
    )
    return api(method, endpoint)


@st.composite
def _sequence(draw: Any) -> list[Step]:
    steps: list[Step] = []
    if draw(st.integers(0, 9)) > 0:
        steps.append(api("PUT", "vm.create", json.dumps(draw(_config()))))
        if draw(st.integers(0, 3)) > 0:
            steps.append(api("PUT", "vm.boot"))
    steps += draw(st.lists(_step(), min_size=2, max_size=12))
    steps.append(api("GET", "vm.info"))
    return steps


def sequences(count: int = DEFAULT_COUNT, seed: int | None = None) -> list[list[Step]]:
    """``count`` different step lists (fewer only if hypothesis runs out of new ones)."""
    found: dict[str, list[Step]] = {}

    def collect(steps: list[Step]) -> None:
        key = json.dumps([s.to_json() for s in steps], sort_keys=True)
        if len(found) < count:
            found.setdefault(key, steps)

    test = given(_sequence())(collect)
    test = settings(
        max_examples=count * 2,
        derandomize=seed is None,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )(test)
    if seed is not None:
        test = hypothesis_seed(seed)(test)
    test()
    return list(found.values())


def generate(count: int = DEFAULT_COUNT, seed: int | None = None) -> list[Sequence]:
    """The generated sequences, named by their number and seed."""
    label = "derandomized" if seed is None else f"seed {seed}"
    return [
        Sequence(
            name=f"generated #{i} ({label})",
            source="generated",
            steps=tuple(steps),
            origin=f"hypothesis, {label}, example {i}",
        )
        for i, steps in enumerate(sequences(count, seed), 1)
    ]
