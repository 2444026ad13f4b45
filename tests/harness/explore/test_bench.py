"""The machine benchmark counts the machine's own steps and builds its ceiling from the
machine's own rules (no timing asserted)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import stateful as hs

from harness.explore import bench
from harness.explore.machine import BdfMachine
from harness.explore.run import close_loop, machine_class, run_machine
from harness.explore.vocabulary import OPEN_DESYNCS


@pytest.fixture(autouse=True)
def _loop() -> Iterator[None]:
    yield
    close_loop()


@pytest.fixture
def machine() -> type[BdfMachine]:
    return machine_class("v53", avoid=OPEN_DESYNCS)


def test_the_ceiling_has_the_machines_rules_and_strategies_without_preconditions(
    machine: type[BdfMachine],
) -> None:
    mine, top = bench.rules_of(machine), bench.rules_of(bench.ceiling_machine(machine))
    assert set(top) == set(mine)
    assert {"attach_disk", "migrate", "begin", "in_sync"} <= set(mine)
    for name, (marker, kept) in mine.items():
        top_marker, top_kept = top[name]
        assert top_marker == marker
        if marker != hs.INVARIANT_MARKER:
            assert top_kept.arguments == kept.arguments  # the very strategy objects
            assert top_kept.preconditions == ()
        assert top_kept.function is not kept.function
    assert any(kept.preconditions for _m, kept in mine.values())


def test_the_counted_machine_keeps_every_precondition(machine: type[BdfMachine]) -> None:
    counted = bench.counted_machine(machine)
    assert issubclass(counted, machine)
    mine, got = bench.rules_of(machine), bench.rules_of(counted)
    for name, (marker, kept) in mine.items():
        if marker == hs.RULE_MARKER:
            assert got[name][1].preconditions == kept.preconditions
            assert got[name][1].arguments == kept.arguments


def _commands(
    monkeypatch: pytest.MonkeyPatch, machine: type[BdfMachine]
) -> Callable[[], list[str]]:
    seen: list[str] = []
    orig = BdfMachine._step

    def step(self: BdfMachine, text: str, op: Callable[[], Any]) -> bool:
        seen.append(text)
        return orig(self, text, op)

    monkeypatch.setattr(BdfMachine, "_step", step)

    def taken() -> list[str]:
        out = list(seen)
        seen.clear()
        return out

    return taken


def test_the_counted_machine_runs_the_machines_very_steps_and_counts_its_rules(
    monkeypatch: pytest.MonkeyPatch, machine: type[BdfMachine]
) -> None:
    taken = _commands(monkeypatch, machine)
    config = bench._config(8, 20)  # the sequences part after a few examples otherwise
    plain = run_machine(machine, settings_=config)
    steps = taken()
    bench._Counter.rules = 0
    counted = run_machine(bench.counted_machine(machine), settings_=config)
    assert plain.failure is None and counted.failure is None
    assert taken() == steps and counted.steps == plain.steps == len(steps) > 0
    # a rule makes one step, or none (the initialize rule, a rule that steers around a
    # known desync), or two (a faulted attach: the fault, then the attach); each of the
    # 8 examples runs the initialize rule
    faults = sum(1 for text in steps if text.startswith("fault "))
    assert bench._Counter.rules >= len(steps) - faults + 8


def test_the_ceiling_runs_every_rule_it_draws_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch, machine: type[BdfMachine]
) -> None:
    taken = _commands(monkeypatch, machine)
    ceiling, config = bench.ceiling_machine(machine), bench._config(5, 10)
    _none, rules, cpu = bench._timed(lambda: hs.run_state_machine_as_test(ceiling, settings=config))
    assert rules >= 5 * 2 and cpu > 0  # the initialize rule and at least one more each
    assert taken() == []  # nothing under test ran


def test_main_prints_the_machine_its_ceiling_and_the_share(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bench.main(["--examples", "2", "--steps", "5", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "profile v53, one host, 2 examples of up to 5 steps" in out
    assert "  machine: " in out and " steps/s, " in out
    assert "  ceiling: the same 19 rules with their argument strategies" in out
    assert "% of its ceiling" in out and "load average" in out


def test_bad_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--examples", "0"])
    assert exc.value.code == 2
    assert bench.main(["--profile", "v99", "--repeat", "1"]) == 2
    assert "v99" in capsys.readouterr().err


def test_a_rule_that_returns_into_a_bundle_is_refused() -> None:
    class WithBundle(hs.RuleBasedStateMachine):
        things = hs.Bundle("things")

        @hs.rule(target=things)
        def make(self) -> int:
            return 1

    with pytest.raises(bench.HarnessError, match="make"):
        bench.rules_of(WithBundle)
