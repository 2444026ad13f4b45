"""The differential's comparison and its normalisation table, on made-up runs (the
real binaries are compared by ``bdf-harness diff`` itself, in ``tox -e chv``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.differential.compare import compare_run
from harness.differential.normalise import KNOWN_GAPS, NORMALISATIONS, format_table, lost_at_exit
from harness.differential.runner import SequenceRun, SideResult, StepRun
from harness.differential.sequence import Sequence, api
from harness.differential.wire import HttpAnswer

HEADERS = (("Server", "Cloud Hypervisor API"), ("Connection", "keep-alive"))


def _answer(status: int, body: Any = None) -> HttpAnswer:
    data = b"" if body is None else json.dumps(body).encode()
    headers = HEADERS
    if data:
        headers += (("Content-Type", "application/json"), ("Content-Length", str(len(data))))
    return HttpAnswer(f"HTTP/1.1 {status} ", headers, data)


def _run(pairs: list[tuple[Any, HttpAnswer, HttpAnswer]], **events: Any) -> SequenceRun:
    steps = tuple(step for step, _f, _r in pairs)
    run = SequenceRun(Sequence("t", "generated", steps), "v53")
    for i, (step, fake, real) in enumerate(pairs, 1):
        run.steps.append(StepRun(i, step, {"fake": SideResult([fake]), "real": SideResult([real])}))
    run.events = {"fake": events.get("fake", []), "real": events.get("real", [])}
    run.exits = {"fake": 0, "real": 0}
    return run


def _event(source: str, name: str) -> dict[str, Any]:
    return {"timestamp": {"secs": 0, "nanos": 1}, "source": source, "event": name}


def test_a_body_difference_names_the_json_path() -> None:
    run = _run([(api("GET", "vmm.ping"), _answer(200, {"v": "a"}), _answer(200, {"v": "b"}))])
    (exchange,) = compare_run(run).exchanges
    assert [(d.kind, d.where, d.fake, d.real) for d in exchange.differences] == [
        ("body", "$.v", "a", "b")
    ]


def test_random_macs_and_tap_macs_are_the_environment() -> None:
    fake = {"config": {"net": [{"mac": "2e:00:11:22:33:44", "host_mac": "02:aa:bb:cc:dd:ee"}]}}
    real = {"config": {"net": [{"mac": "2e:99:88:77:66:55", "host_mac": "e2:3b:2c:d7:44:60"}]}}
    run = _run([(api("GET", "vm.info"), _answer(200, fake), _answer(200, real))])
    assert compare_run(run).differences == 0
    real["config"]["net"][0].pop("host_mac")  # its presence is compared
    run = _run([(api("GET", "vm.info"), _answer(200, fake), _answer(200, real))])
    assert compare_run(run).differences == 1


def test_events_lost_at_the_real_exit_are_tolerated_only_at_the_end() -> None:
    start, booted = _event("vmm", "starting"), _event("vm", "booted")
    tail = [_event("vm", "shutdown"), _event("vm", "deleted"), _event("vmm", "shutdown")]
    assert lost_at_exit([start, booted, *tail], [start, booted], True) == [start, booted]
    assert lost_at_exit([start, booted, *tail], [start, booted], False) == [start, booted, *tail]
    added = _event("vm", "device-removed")  # not a life-cycle event: a difference
    assert lost_at_exit([start, added], [start], True) == [start, added]
    ok = _answer(204)
    run = _run([(api("PUT", "vm.boot"), ok, ok)], fake=[start, booted, *tail], real=[start])
    assert compare_run(run).differences == 0
    run = _run([(api("PUT", "vm.boot"), ok, ok)], fake=[start], real=[start, booted])
    assert compare_run(run).differences == 1  # the real side has more: never tolerated


def test_nothing_is_compared_after_the_real_vmm_thread_is_gone() -> None:
    gone = ["Error from API", "API response receive error", "receiving on a closed channel"]
    after = _answer(500, ["Error from API", "API request send error", "sending"])
    run = _run(
        [
            (api("PUT", "vm.add-disk", {"path": "/a"}), _answer(500, gone), _answer(500, gone)),
            (api("GET", "vm.info"), _answer(200, {"state": "Running"}), after),
        ]
    )
    result = compare_run(run)
    assert result.cut == 2 and len(result.exchanges) == 1 and result.differences == 0


def test_every_normalisation_says_why() -> None:
    names = [row.name for row in NORMALISATIONS]
    assert len(names) == len(set(names))
    assert all(row.scope and len(row.reason) > 15 for row in NORMALISATIONS)
    assert "lost-at-exit" in format_table() and "vmm-gone" in format_table()


_SEND = api("PUT", "vm.send-migration", {"destination_url": "unix:/nowhere"})


@pytest.mark.parametrize(
    ("request_", "refusal"),
    [
        (
            api("PUT", "vm.pause"),
            ["The VM could not be paused", "VM is currently migrating and can't be modified"],
        ),
        # a send that fails at once (nobody listens) leaves the real worker running a
        # moment: a second send then is refused as an ongoing migration (seen on head)
        (
            _SEND,
            [
                "Error dispatching the migration worker",
                "Failed to send migratable component snapshot",
                "There is already an ongoing migration",
            ],
        ),
    ],
    ids=["currently-migrating", "ongoing-migration"],
)
def test_the_migration_workers_window_ends_the_comparison(
    request_: Any, refusal: list[str]
) -> None:
    """From v53 both sides answer a send-migration 204; a request the real worker's
    window refuses ends the comparison there (fakechv's waits for its worker)."""
    run = _run(
        [
            (api("PUT", "vm.boot"), _answer(204), _answer(204)),
            (_SEND, _answer(204), _answer(204)),
            (request_, _answer(204), _answer(500, ["Error from API", *refusal])),
            (api("GET", "vm.info"), _answer(200, {"a": 1}), _answer(200, {"a": 2})),
        ]
    )
    result = compare_run(run)
    assert (result.cut, result.gap, result.differences) == (3, None, 0)  # from the refusal
    assert "migration-window" in format_table()


def test_no_gap_is_open_so_a_failed_send_is_a_difference() -> None:
    """The former known gap (fakechv answering the worker's failure) is modelled now:
    a fake 500 against a real 204 is a difference like any other."""
    assert KNOWN_GAPS == ()
    send = api("PUT", "vm.send-migration", {"destination_url": "unix:/nowhere"})
    failed = _answer(500, ["Error from API", "Error dispatching the migration worker"])
    run = _run([(api("PUT", "vm.boot"), _answer(204), _answer(204)), (send, failed, _answer(204))])
    result = compare_run(run)
    assert result.gap is None and result.differences > 0


def test_a_known_gap_is_counted_not_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gap listed in KNOWN_GAPS stops the comparison where it starts and is counted,
    so that an open fakechv difference stays visible without failing the check."""
    from harness.differential import normalise

    gap = normalise.KnownGap("send-fails", "a test gap", "the fake answers 500", lambda r: 2)
    monkeypatch.setattr(normalise, "KNOWN_GAPS", (gap,))
    send = api("PUT", "vm.send-migration", {"destination_url": "unix:/nowhere"})
    failed = _answer(500, ["Error from API", "Error dispatching the migration worker"])
    run = _run([(api("PUT", "vm.boot"), _answer(204), _answer(204)), (send, failed, _answer(204))])
    result = compare_run(run)
    assert (result.cut, result.gap, result.differences) == (2, "send-fails", 0)
    assert "send-fails" in format_table()
