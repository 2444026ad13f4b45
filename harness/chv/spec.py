"""Check CHV API exchanges against the official OpenAPI spec of each release.

The specs live beside the project in ``../shared/reference/`` (override with the
``CHV_REFERENCE_DIR`` environment variable); they are read, never copied.

``check_exchange`` is what tests and the harness' CHV client call for every
request and response:

* a request body must match the schema of the path's ``requestBody``; with
  ``strict=True`` an object may not carry properties the release does not know
  (this is how the v51 profile catches a driver that sends ``pci_device_id``);
* a 2xx response must use a status the spec documents for that path (or one
  listed in :data:`KNOWN_DEVIATIONS`, where CHV's source and its spec disagree)
  and its JSON body must match the documented schema;
* an error response (4xx/5xx) must carry CHV's error body: a JSON array of
  strings.

Real CHV serialises unset ``Option`` fields as ``null`` in ``vm.info``; the spec
does not say ``nullable``, so in responses a property that is not required may
be ``null``.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fakechv.openapi import PROFILE_SPECS, SOURCE_CORRECTIONS, load_spec, reference_dir
from harness.chv.schemacheck import INT_FORMATS, Check, Unsupported, compile_schema

if TYPE_CHECKING:
    import jsonschema

__all__ = [
    "KNOWN_DEVIATIONS",
    "PROFILE_SPECS",
    "SCHEMA_DEVIATIONS",
    "SOURCE_CORRECTIONS",
    "SpecViolation",
    "check_exchange",
    "load_spec",
    "reference_dir",
    "spec_path_for",
    "validate_request",
    "validate_response",
]

#: (path, status) pairs CHV's source answers although the spec does not list
#: them, with the reason. Keyed by spec path ("/vmm.shutdown").
KNOWN_DEVIATIONS: dict[tuple[str, int], str] = {
    ("/vmm.shutdown", 200): (
        "CHV's HTTP endpoint answers vmm.shutdown with 200 and an empty body "
        "(vmm/src/api/http/http_endpoint.rs); the spec documents 204"
    ),
}

#: response schemas read otherwise than the spec writes them, with the reason
SCHEMA_DEVIATIONS: dict[str, str] = {
    "/vm.counters": (
        "a counter is a Wrapping<u64> (virtio-devices/src/block.rs@v53.0:1260-1295; a "
        "latency starts at u64::MAX): the spec's int64 is read as uint64"
    ),
}

_COUNTER = {"type": "integer", "format": "uint64"}
_DEVIATING_SCHEMAS: dict[str, dict[str, Any]] = {
    "/vm.counters": {
        "type": "object",
        "additionalProperties": {"type": "object", "additionalProperties": _COUNTER},
    },
}


API_PREFIX = "/api/v1"

_JSON_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})


class SpecViolation(AssertionError):
    """An exchange that the official spec of the release does not allow."""


def spec_path_for(path: str) -> str:
    """``/api/v1/vm.info`` or ``vm.info`` -> the spec's path key ``/vm.info``."""
    if path.startswith(API_PREFIX + "/"):
        path = path[len(API_PREFIX) :]
    if not path.startswith("/"):
        path = "/" + path
    return path


@functools.cache
def _format_checker() -> jsonschema.FormatChecker:
    import jsonschema  # only for an invalid body's message: the check itself is compiled

    checker = jsonschema.FormatChecker()

    def make(lo: int, hi: int) -> Any:
        def check(value: object) -> bool:
            if isinstance(value, bool) or not isinstance(value, int):
                return True  # the type keyword reports non-integers
            return lo <= value <= hi

        return check

    for name, (lo, hi) in INT_FORMATS.items():
        checker.checks(name)(make(lo, hi))
    return checker


def _transform(schema: Any, *, nullable_optional: bool, strict: bool) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema with this module's response/request rules."""
    if isinstance(schema, list):
        return [_transform(s, nullable_optional=nullable_optional, strict=strict) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("description", "summary", "example", "deprecated"):
            continue
        out[key] = _transform(value, nullable_optional=nullable_optional, strict=strict)
    kind = out.get("type")
    if isinstance(kind, str) and kind not in _JSON_TYPES:
        # the v51 spec writes `type: enum ["FixedVhd", ...]` (ImageType): read it as
        # a string enum, which is what CHV's serde enum accepts
        out.pop("type")
        values = re.findall(r'"([^"]*)"', kind) if kind.startswith("enum") else []
        if values:
            out["type"] = "string"
            out["enum"] = values
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        out.pop("nullable", None)
    if "properties" in out and isinstance(out["properties"], dict):
        required = set(out.get("required", []))
        if nullable_optional:
            for name, prop in list(out["properties"].items()):
                if name not in required:
                    out["properties"][name] = {"anyOf": [prop, {"type": "null"}]}
        if strict and "additionalProperties" not in out:
            out["additionalProperties"] = False
    return out


@functools.cache
def _components(profile: str, nullable_optional: bool, strict: bool) -> dict[str, Any]:
    doc = load_spec(profile)
    comps = copy.deepcopy(doc.get("components", {}))
    return {
        "components": _transform(comps, nullable_optional=nullable_optional, strict=strict),
    }


@functools.cache
def _root(profile: str, schema_key: str, response: bool, strict: bool) -> dict[str, Any]:
    """The JSON Schema of a spec schema, with the components it refers to."""
    schema = json.loads(schema_key)
    root = dict(_components(profile, response, strict))
    root.update(_transform(schema, nullable_optional=response, strict=strict))
    return root


@functools.cache
def _validator(profile: str, schema_key: str, response: bool, strict: bool) -> Any:
    import jsonschema

    root = _root(profile, schema_key, response, strict)
    return jsonschema.Draft4Validator(root, format_checker=_format_checker())


@functools.cache
def _fast_check(profile: str, schema_key: str, response: bool, strict: bool) -> Check | None:
    """The compiled check of :func:`_root`'s schema, or None outside its subset."""
    try:
        return compile_schema(_root(profile, schema_key, response, strict))
    except Unsupported:
        return None


#: (id of a spec schema, profile, response, strict) -> (the schema, its key, its check);
#: the schema is kept so that its id stays its own
_CHECKS: dict[tuple[int, str, bool, bool], tuple[object, str, Check | None]] = {}


def _validate(
    profile: str, schema: Mapping[str, Any], instance: object, *, response: bool, strict: bool
) -> None:
    entry = _CHECKS.get((id(schema), profile, response, strict))
    if entry is None or entry[0] is not schema:
        key = json.dumps(schema, sort_keys=True)
        entry = (schema, key, _fast_check(profile, key, response, strict))
        _CHECKS[(id(schema), profile, response, strict)] = entry
    _schema, key, fast = entry
    if fast is not None and fast(instance):
        return  # valid; only an invalid instance needs jsonschema's message
    validator = _validator(profile, key, response, strict)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "<body>"
        raise SpecViolation(f"{where}: {err.message}")


def _operation(profile: str, method: str, path: str) -> dict[str, Any]:
    doc = load_spec(profile)
    spec_path = spec_path_for(path)
    item = doc["paths"].get(spec_path)
    if item is None:
        raise SpecViolation(f"{method} {spec_path}: path not in the {profile} spec")
    op = item.get(method.lower())
    if op is None:
        allowed = ", ".join(sorted(k.upper() for k in item))
        raise SpecViolation(
            f"{method} {spec_path}: method not in the {profile} spec (allowed: {allowed})"
        )
    return dict(op)


def validate_request(
    profile: str, method: str, path: str, body: object | None, *, strict: bool = False
) -> None:
    """Raise :class:`SpecViolation` if this request is not one the spec describes."""
    op = _operation(profile, method, path)
    spec_path = spec_path_for(path)
    rb = op.get("requestBody")
    if rb is None:
        if body is not None:
            raise SpecViolation(f"{method} {spec_path}: the spec defines no request body")
        return
    schema = rb.get("content", {}).get("application/json", {}).get("schema")
    if body is None:
        if rb.get("required"):
            raise SpecViolation(f"{method} {spec_path}: request body required")
        return
    if schema is not None:
        try:
            _validate(profile, schema, body, response=False, strict=strict)
        except SpecViolation as exc:
            raise SpecViolation(f"{method} {spec_path} request: {exc}") from None


def validate_response(
    profile: str, method: str, path: str, status: int, body: object | None
) -> None:
    """Raise :class:`SpecViolation` if this response is not one the spec allows.

    ``body`` is the decoded JSON, or ``None`` for an empty body.
    """
    op = _operation(profile, method, path)
    spec_path = spec_path_for(path)
    label = f"{method} {spec_path} -> {status}"
    if status >= 400:
        if status == 400 and body is None:
            return  # CHV answers some malformed requests with an empty 400
        if not (isinstance(body, list) and all(isinstance(m, str) for m in body) and body):
            raise SpecViolation(f"{label}: CHV error bodies are a JSON array of strings: {body!r}")
        return
    responses = {str(k): v for k, v in op.get("responses", {}).items()}
    entry = responses.get(str(status))
    if entry is None:
        if (spec_path, status) in KNOWN_DEVIATIONS:
            if body is not None:
                raise SpecViolation(f"{label}: expected an empty body")
            return
        documented = ", ".join(sorted(responses))
        raise SpecViolation(f"{label}: status not documented (spec: {documented})")
    content = (entry or {}).get("content")
    if not content:
        if body is not None:
            raise SpecViolation(f"{label}: the spec documents no body, got {body!r}")
        return
    schema = content.get("application/json", {}).get("schema")
    if body is None:
        raise SpecViolation(f"{label}: the spec documents a JSON body, got none")
    if schema is not None:
        if spec_path in SCHEMA_DEVIATIONS:
            schema = _DEVIATING_SCHEMAS[spec_path]
        try:
            _validate(profile, schema, body, response=True, strict=False)
        except SpecViolation as exc:
            raise SpecViolation(f"{label} response: {exc}") from None


def check_exchange(
    profile: str,
    method: str,
    path: str,
    request_body: object | None,
    status: int,
    response_body: object | None,
    *,
    strict: bool = False,
) -> None:
    """Check one request/response pair; requests are checked only when accepted.

    A request that CHV rejected (4xx/5xx) may legitimately be outside the spec,
    so only its response shape is checked. Control paths outside ``/api/v1``
    (fakechv's ``/fakechv/v1/``) are not CHV's and are not checked.
    """
    if not (path.startswith(API_PREFIX + "/") or not path.startswith("/")):
        return
    if status < 400:
        validate_request(profile, method, path, request_body, strict=strict)
    try:
        _operation(profile, method, path)
    except SpecViolation:
        if status == 404 or status == 400:
            # unknown path or method: CHV answers with an error array
            if not (isinstance(response_body, list) and response_body):
                raise
            return
        raise
    validate_response(profile, method, path, status, response_body)
