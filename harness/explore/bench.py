"""The property machine's rate beside the most hypothesis allows its rule set.

``python -m harness.explore.bench`` (part of ``tox -e bench``) runs two derandomized
machines for the same number of examples and prints what each ran per CPU second:

- **machine**: the property state machine (:mod:`harness.explore.machine`, v53 unless
  ``--profile``, steering around the open desyncs as a soak does), after a short warm-up
  run; its steps (one recorded scenario step each, two for a faulted attach) and the
  rules hypothesis ran to make them;
- **ceiling**: a machine with the same rules and the same argument strategies, every
  precondition true and every body empty, and as many empty invariants: nothing under
  test. Its rate is what hypothesis itself (drawing a rule and its arguments, running
  the invariants, keeping the choices for shrinking) allows this rule set on this host.
  No change to the driver, fakechv or the checks can take the machine past it.

Figures are printed with the machine's load average, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from hypothesis import HealthCheck, Phase, settings
from hypothesis import stateful as hs

from fakechv.loadavg import load_average
from harness.chv.capabilities import CAPABILITIES
from harness.errors import HarnessError

__all__ = ["ceiling_machine", "counted_machine", "main", "rules_of"]


M = TypeVar("M", bound=hs.RuleBasedStateMachine)
T = TypeVar("T")


class _Counter:
    rules = 0


def rules_of(machine: type[hs.RuleBasedStateMachine]) -> dict[str, Any]:
    """The rules, initialize rules and invariants of ``machine``, by method name (the
    objects hypothesis keeps on each decorated method)."""
    markers = (hs.RULE_MARKER, hs.INITIALIZE_RULE_MARKER, hs.INVARIANT_MARKER)
    found: dict[str, Any] = {}
    for name in dir(machine):
        member = getattr(machine, name, None)
        for marker in markers:
            kept = getattr(member, marker, None)
            if kept is not None:
                if getattr(kept, "targets", ()):
                    raise HarnessError(f"rule {name} returns into a bundle: not supported")
                found[name] = (marker, kept)
    return found


def _rebuilt(
    machine: type[hs.RuleBasedStateMachine],
    base: type[hs.RuleBasedStateMachine],
    body: Callable[[Callable[..., Any]], Callable[..., Any]],
    *,
    ceiling: bool,
) -> type[hs.RuleBasedStateMachine]:
    """A subclass of ``base`` with each of ``machine``'s rules (and initialize rules)
    remade from its argument strategies around ``body(function)``. ``ceiling``: drop the
    preconditions and give the class as many invariants as ``machine``, empty."""
    attrs: dict[str, Any] = {}
    for name, (marker, kept) in rules_of(machine).items():
        if marker == hs.INVARIANT_MARKER:
            if ceiling:
                attrs[name] = hs.invariant()(_named(name, _nothing()))
            continue
        method = _named(name, body(kept.function))
        if marker == hs.INITIALIZE_RULE_MARKER:
            attrs[name] = hs.initialize(**kept.arguments)(method)
            continue
        made = hs.rule(**kept.arguments)(method)
        for pred in () if ceiling else kept.preconditions:
            made = hs.precondition(pred)(made)
        attrs[name] = made
    # hypothesis seeds a derandomized run from the machine class's name: under the same
    # name the counted machine runs the very steps of the machine it counts
    return type(machine.__name__, (base,), attrs)


def _named(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    function.__name__ = function.__qualname__ = name
    return function


def _nothing() -> Callable[[Any], None]:
    def check(self: Any) -> None:
        """An empty invariant."""

    return check


def counted_machine(machine: type[M]) -> type[M]:
    """``machine`` itself, counting the rules it runs in ``_Counter.rules``."""

    def counted(function: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: Any, **kwargs: Any) -> Any:
            _Counter.rules += 1
            return function(self, **kwargs)

        return run

    return cast(type[M], _rebuilt(machine, machine, counted, ceiling=False))


def ceiling_machine(machine: type[hs.RuleBasedStateMachine]) -> type[hs.RuleBasedStateMachine]:
    """``machine``'s rules with nothing under test: every precondition true, every body
    empty but for counting the rule in ``_Counter.rules``."""

    def empty(function: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: Any, **kwargs: Any) -> None:
            _Counter.rules += 1

        return run

    return _rebuilt(machine, hs.RuleBasedStateMachine, empty, ceiling=True)


def _config(examples: int, steps: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def _timed(run: Callable[[], T]) -> tuple[T, int, float]:
    """``run()``'s value, the rules it ran and its CPU seconds."""
    _Counter.rules = 0
    started = time.process_time()
    value = run()
    return value, _Counter.rules, time.process_time() - started


def main(argv: Sequence[str] | None = None) -> int:
    from harness.collector import fewer_collections
    from harness.explore.run import close_loop, machine_class, run_machine
    from harness.explore.vocabulary import OPEN_DESYNCS

    parser = argparse.ArgumentParser(
        prog="python -m harness.explore.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--profile", default="v53", help=f"CHV profile ({', '.join(CAPABILITIES)}; default v53)"
    )
    parser.add_argument("--migration", action="store_true", help="two daemons, with migration")
    parser.add_argument("--examples", type=int, default=40, help="examples a run (default 40)")
    parser.add_argument("--steps", type=int, default=50, help="steps an example (default 50)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args(argv)
    if min(args.examples, args.steps, args.repeat) < 1:
        parser.error("--examples, --steps and --repeat must be at least 1")
    try:
        machine = machine_class(args.profile, avoid=OPEN_DESYNCS, migration=args.migration)
    except HarnessError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    counted, ceiling = counted_machine(machine), ceiling_machine(machine)
    config = _config(args.examples, args.steps)
    hosts = "two hosts with migration" if args.migration else "one host"
    print(
        f"property machine bench: profile {args.profile}, {hosts}, {args.examples} examples "
        f"of up to {args.steps} steps, derandomized, best of {args.repeat} "
        f"(load average {load_average()})"
    )
    best: tuple[float, int, int] | None = None
    top: tuple[int, float] | None = None
    try:
        run_machine(counted, settings_=_config(min(5, args.examples), args.steps))  # warm-up
        for _ in range(args.repeat):  # interleaved: both see the host in the same state
            run, rules, cpu = _timed(lambda: run_machine(counted, settings_=config))
            if run.failure is not None:
                first = (run.failure.failure or "").splitlines()
                print(f"bench: the machine failed: {first[0] if first else run.error}")
                return 1
            if best is None or cpu < best[0]:
                best = (cpu, run.steps, rules)
            with fewer_collections():  # as run_machine runs the machine
                _none, top_rules, top_cpu = _timed(
                    lambda: hs.run_state_machine_as_test(ceiling, settings=config)
                )
            if top is None or top_cpu < top[1]:
                top = (top_rules, top_cpu)
    finally:
        close_loop()
    assert best is not None and top is not None
    cpu, steps, rules = best
    top_rules, top_cpu = top
    rate, top_rate = rules / cpu, top_rules / top_cpu
    print(
        f"  machine: {steps} steps from {rules} rules in {cpu:.2f} s of CPU: "
        f"{steps / cpu:.0f} steps/s, {rate:.0f} rules/s ({cpu / rules * 1000:.3f} ms a rule)"
    )
    kinds = [marker for marker, _kept in rules_of(machine).values()]
    print(
        f"  ceiling: the same {kinds.count(hs.RULE_MARKER)} rules with their argument "
        f"strategies, {kinds.count(hs.INITIALIZE_RULE_MARKER)} initialize rule(s) and "
        f"{kinds.count(hs.INVARIANT_MARKER)} invariant(s), every precondition true, nothing "
        f"under test: {top_rules} rules in "
        f"{top_cpu:.2f} s of CPU: {top_rate:.0f} rules/s ({top_cpu / top_rules * 1000:.3f} ms "
        "a rule, hypothesis's own)"
    )
    print(
        f"  the machine runs at {rate / top_rate:.0%} of its ceiling; however fast the driver, "
        f"fakechv and the checks become, it stays under {top_rate:.0f} rules/s "
        f"(about {top_rate * steps / rules:.0f} steps/s) on this host "
        f"(load average {load_average()})"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
