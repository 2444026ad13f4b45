"""run.json's writer gives the standard encoder's text, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.reports.runjson import content_key, run_json_text
from harness.scenario.batch import run_paths
from harness.scenario.results import RunResult, ScenarioResult, SlotEntry, StepResult

ROOT = Path(__file__).resolve().parents[3]


def _standard(run: RunResult) -> str:
    return json.dumps(run.to_json(), indent=2, sort_keys=True) + "\n"


#: what API bodies, violations and changes hold: every JSON type, the awkward numbers,
#: strings that need escaping, values equal across types (1, 1.0, True), tuples, number keys
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1, 1.0, 0.0, -0.0, True, False])
    | st.text(st.characters(codec="utf-8"), max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        | st.dictionaries(st.integers(-3, 3), inner, max_size=3)  # keys the encoder converts
    ),
    max_leaves=12,
)
_entry = st.builds(
    SlotEntry,
    device=st.text(max_size=8),
    cls=st.sampled_from(["disk", "interface", "rng", "unknown"]),
    alias=st.none() | st.text(max_size=5),
)
_maps = st.dictionaries(
    st.sampled_from(["live", "persistent", "chv"]),
    st.dictionaries(
        st.sampled_from(["testvm", "src/testvm"]),
        st.dictionaries(st.sampled_from(["0000:00:01.0", "0001:00:02.0", "weird"]), _entry),
        max_size=2,
    ),
    max_size=3,
)
_step = st.builds(
    StepResult,
    index=st.integers(0, 50),
    text=st.text(max_size=20),
    error=st.none() | st.text(max_size=10),
    maps=_maps,
    differences=st.lists(st.text(max_size=14), max_size=2),
    violations=st.lists(st.dictionaries(st.text(max_size=5), _json, max_size=3), max_size=2),
    exchanges=st.lists(st.dictionaries(st.text(max_size=8), _json, max_size=4), max_size=3),
    changes=st.lists(st.text(max_size=10), max_size=2),
    seconds=st.floats(0, 10),
    line=st.integers(0, 300),
)


@st.composite
def _runs(draw: st.DrawFn) -> RunResult:
    steps = draw(st.lists(_step, max_size=4))
    # a suite's steps repeat their maps and bodies: repeat some, at other depths too
    steps += [
        StepResult(index=s.index + 1, text=s.text, maps=s.maps, exchanges=list(s.exchanges))
        for s in steps[: draw(st.integers(0, len(steps)))]
    ]
    scenarios = [
        ScenarioResult(name=draw(st.text(max_size=6)), file="x.yaml", steps=steps[:cut])
        for cut in draw(st.lists(st.integers(0, len(steps)), max_size=3))
    ]
    return RunResult(
        scenarios=scenarios,
        seconds=draw(st.floats(0, 100)),
        hypervisors=draw(st.dictionaries(st.text(max_size=4), st.text(max_size=8), max_size=2)),
    )


@settings(max_examples=300, deadline=None)
@given(_runs())
def test_run_json_is_the_standard_encoders_text(run: RunResult) -> None:
    assert run_json_text(run) == _standard(run)


def test_run_json_of_a_real_run_is_the_standard_encoders_text() -> None:
    run = run_paths([ROOT / "scenarios" / "hotplug", ROOT / "scenarios" / "migration"], jobs=1)
    assert run.scenarios and any(step.exchanges for s in run.scenarios for step in s.steps)
    text = run_json_text(run)
    assert text == _standard(run)
    assert RunResult.from_json(json.loads(text)) == run


def test_run_json_refuses_what_the_standard_encoder_refuses() -> None:
    run = RunResult(scenarios=[ScenarioResult("a", "a.yaml", steps=[StepResult(1, "x")])])
    run.scenarios[0].steps[0].exchanges.append({"request": b"raw"})
    with pytest.raises(TypeError):
        _standard(run)
    with pytest.raises(TypeError):
        run_json_text(run)


def test_content_keys_tell_equal_values_of_other_types_apart() -> None:
    keys = [content_key(v) for v in (1, 1.0, True, [1], (1,), {"a": 1}, {"a": 1.0})]
    assert None not in keys and len(set(keys)) == len(keys)
    assert content_key({"a": [1, "b"]}) == content_key({"a": [1, "b"]})
    assert content_key(SlotEntry("disk vda", "disk")) is None  # no plain data: never kept
