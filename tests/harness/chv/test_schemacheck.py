"""The compiled schema check gives jsonschema's verdict on every schema of every spec."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.chv import spec
from harness.chv.schemacheck import INT_FORMATS, Unsupported, compile_schema

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def _resolve(root: dict[str, Any], ref: str) -> Any:
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return target


def _instance(draw: Any, root: dict[str, Any], schema: Any, depth: int = 0) -> Any:
    """Mostly what the schema describes, often just off it (a wrong type, a missing
    required property, an extra one, an integer past its width)."""
    if depth > 6 or draw(st.integers(0, 9)) == 0:
        return draw(_JSON)
    if "$ref" in schema:
        return _instance(draw, root, _resolve(root, schema["$ref"]), depth + 1)
    if "anyOf" in schema:
        return _instance(draw, root, draw(st.sampled_from(schema["anyOf"])), depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = draw(st.sampled_from(kind))
    if "enum" in schema:
        return draw(st.sampled_from(schema["enum"]) | st.text(max_size=3))
    if kind == "object" or "properties" in schema:
        out: dict[str, Any] = {}
        for name, sub in schema.get("properties", {}).items():
            required = name in schema.get("required", [])
            if draw(st.integers(0, 9)) < (9 if required else 4):
                out[name] = _instance(draw, root, sub, depth + 1)
        if draw(st.integers(0, 7)) == 0:
            out[draw(st.text(max_size=3))] = draw(_JSON)
        return out
    if kind == "array":
        items = schema.get("items", {})
        return [_instance(draw, root, items, depth + 1) for _ in range(draw(st.integers(0, 3)))]
    if kind == "integer":
        lo, hi = INT_FORMATS.get(schema.get("format", ""), (-(2**70), 2**70))
        edges = [lo - 1, lo, hi, hi + 1, schema.get("minimum", 0) - 1, schema.get("minimum", 0)]
        return draw(st.sampled_from(edges) | st.integers(lo - 2, hi + 2) | st.floats(-3, 3))
    if kind == "number":
        return draw(st.floats(allow_nan=False) | st.integers() | st.booleans())
    if kind == "string":
        return draw(st.text(max_size=5) | st.integers(0, 3))
    if kind == "boolean":
        return draw(st.booleans() | st.integers(0, 1))
    if kind == "null":
        return draw(st.none() | st.just(0))
    return draw(_JSON)


def _spec_schemas() -> list[tuple[str, str, bool, bool]]:
    """(profile, schema key, response, strict) of every body schema in every spec."""
    out = []
    for profile in spec.PROFILE_SPECS:
        doc = spec.load_spec(profile)
        for item in doc["paths"].values():
            for op in item.values():
                bodies = []
                if op.get("requestBody"):
                    bodies.append((op["requestBody"]["content"]["application/json"], False))
                for entry in op.get("responses", {}).values():
                    if (entry or {}).get("content"):
                        bodies.append((entry["content"]["application/json"], True))
                for content, response in bodies:
                    key = json.dumps(content["schema"], sort_keys=True)
                    for strict in (False, True) if not response else (False,):
                        out.append((profile, key, response, strict))
    return sorted(set(out))


SCHEMAS = _spec_schemas()


def test_every_spec_schema_compiles() -> None:
    assert len(SCHEMAS) > 50
    for case in SCHEMAS:
        assert spec._fast_check(*case) is not None, case


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_the_compiled_check_agrees_with_jsonschema(data: Any) -> None:
    case = data.draw(st.sampled_from(SCHEMAS))
    validator = spec._validator(*case)
    instance = _instance(data.draw, validator.schema, validator.schema)
    check = compile_schema(validator.schema)
    assert check(instance) == validator.is_valid(instance), (case, instance)


def test_a_body_valid_by_the_check_is_one_jsonschema_accepts() -> None:
    # a disk with a pci_device_id past u8 is refused by both, with jsonschema's message
    with pytest.raises(spec.SpecViolation, match="pci_device_id"):
        spec.validate_request(
            "v53", "PUT", "/api/v1/vm.add-disk", {"path": "/a", "pci_device_id": 256}
        )
    spec.validate_request("v53", "PUT", "/api/v1/vm.add-disk", {"path": "/a", "pci_device_id": 3})


@pytest.mark.parametrize(
    ("schema", "valid", "invalid"),
    [
        ({"type": "integer", "format": "uint8"}, [0, 255], [256, -1, True, "x", 1.5]),
        ({"format": "int8"}, [-128, "x", 1000.5, None], [128, -129]),
        ({"type": ["string", "null"]}, ["a", None], [1, []]),
        ({"enum": ["A", "B"]}, ["A"], ["C", 1, None]),
        ({"type": "number", "minimum": 1}, [1, 2.5], [0, 0.5, True]),
        ({"properties": {"a": {"type": "string"}}, "required": ["a"]}, [{"a": "x"}, 3], [{}]),
        ({"additionalProperties": False, "properties": {"a": {}}}, [{"a": 1}], [{"b": 1}]),
        ({"additionalProperties": {"type": "integer"}}, [{"x": 1}], [{"x": "1"}]),
        ({"items": {"type": "boolean"}}, [[True], "x"], [[1]]),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, ["", None], [0]),
        ({"$ref": "#/d", "type": "string", "d": {"type": "integer"}}, [1], ["1"]),
    ],
)
def test_each_keyword_means_what_draft4_says(
    schema: dict[str, Any], valid: list[Any], invalid: list[Any]
) -> None:
    check = compile_schema(schema)
    reference = jsonschema.Draft4Validator(schema, format_checker=spec._format_checker())
    for value in valid:
        assert check(value) and reference.is_valid(value), value
    for value in invalid:
        assert not check(value) and not reference.is_valid(value), value


@pytest.mark.parametrize(
    "schema",
    [
        {"pattern": "^a"},
        {"format": "email"},
        {"enum": [1, 2]},
        {"items": [{"type": "string"}]},
        {"$ref": "http://elsewhere/schema"},
        {"type": "tuple"},
    ],
)
def test_anything_outside_the_subset_is_left_to_jsonschema(schema: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        compile_schema(schema)
