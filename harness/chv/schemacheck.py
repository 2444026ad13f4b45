"""A compiled yes/no check for the JSON Schema (Draft 4) subset the CHV specs use.

:mod:`harness.chv.spec` checks every request and response of a run against the
release's spec. ``jsonschema`` walks the schema anew for each instance and builds an
error object at every step; :func:`compile_schema` turns a schema into nested Python
closures once, which answer only "valid or not" many times faster. When they say
"not valid", the spec check asks ``jsonschema`` for the error message, so messages
stay ``jsonschema``'s own.

The subset, with Draft 4's meaning: ``type`` (one name or a list), ``properties``,
``required``, ``additionalProperties`` (a boolean or a schema), ``items`` (one
schema), ``enum`` of strings, ``anyOf``, ``minimum``/``maximum`` (without the
``exclusive`` flags), ``format`` for the integer widths of :data:`INT_FORMATS`, local
``$ref`` (``#/...``, its siblings ignored, as Draft 4 does) and the annotations
``default``/``description``/``title``/``example``. A schema with any other keyword,
or a value of another shape, is :class:`Unsupported`: the caller keeps ``jsonschema``
for it, so nothing the subset does not know is ever passed unchecked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["INT_FORMATS", "Check", "Unsupported", "compile_schema"]

#: ``format`` name -> the inclusive range of the integer width it names
INT_FORMATS: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}

Check = Callable[[object], bool]

_ANNOTATIONS = frozenset({"default", "description", "title", "example"})
_KNOWN = _ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "anyOf",
    "minimum",
    "maximum",
    "format",
    "$ref",
}


class Unsupported(ValueError):
    """The schema uses something outside the compiled subset."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": _is_int,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def compile_schema(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Check:
    """A function telling whether an instance is valid against ``schema``; local
    ``$ref`` resolve in ``root`` (default ``schema``). :class:`Unsupported` if the
    schema leaves the subset."""
    return _Compiler(root if root is not None else schema).compile(schema)


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def compile(self, schema: object) -> Check:
        if not isinstance(schema, Mapping):
            raise Unsupported(f"schema {schema!r}")
        ref = schema.get("$ref")
        if ref is not None:
            return self._ref(ref)  # Draft 4: the siblings of $ref are ignored
        unknown = set(schema) - _KNOWN
        if unknown:
            raise Unsupported(f"keywords {sorted(unknown)}")
        checks = [
            check
            for check in (
                self._type(schema),
                self._enum(schema),
                self._bounds(schema),
                self._format(schema),
                self._object(schema),
                self._items(schema),
                self._any_of(schema),
            )
            if check is not None
        ]
        if not checks:
            return lambda _v: True
        if len(checks) == 1:
            return checks[0]
        return lambda v: all(check(v) for check in checks)

    def _ref(self, ref: object) -> Check:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise Unsupported(f"$ref {ref!r}")
        if ref not in self.refs:
            target: Any = self.root
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, Mapping) or part not in target:
                    raise Unsupported(f"$ref {ref!r} does not resolve")
                target = target[part]
            slot: list[Check] = []
            self.refs[ref] = lambda v: slot[0](v)  # a schema may refer to itself
            slot.append(self.compile(target))
        return self.refs[ref]

    def _type(self, schema: Mapping[str, Any]) -> Check | None:
        kind = schema.get("type")
        if kind is None:
            return None
        names = [kind] if isinstance(kind, str) else kind
        if not isinstance(names, list) or not all(n in _TYPES for n in names):
            raise Unsupported(f"type {kind!r}")
        tests = [_TYPES[n] for n in names]
        if len(tests) == 1:
            return tests[0]
        return lambda v: any(test(v) for test in tests)

    def _enum(self, schema: Mapping[str, Any]) -> Check | None:
        if "enum" not in schema:
            return None
        values = schema["enum"]
        if not isinstance(values, list) or not all(isinstance(x, str) for x in values):
            raise Unsupported(f"enum {values!r}")
        allowed = frozenset(values)
        return lambda v: isinstance(v, str) and v in allowed

    def _bounds(self, schema: Mapping[str, Any]) -> Check | None:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is None and hi is None:
            return None
        for bound in (lo, hi):
            if bound is not None and not _is_number(bound):
                raise Unsupported(f"bound {bound!r}")
        low = float("-inf") if lo is None else lo
        high = float("inf") if hi is None else hi
        return lambda v: not _is_number(v) or low <= v <= high  # type: ignore[operator]

    def _format(self, schema: Mapping[str, Any]) -> Check | None:
        name = schema.get("format")
        if name is None:
            return None
        if name not in INT_FORMATS:
            raise Unsupported(f"format {name!r}")
        lo, hi = INT_FORMATS[name]
        return lambda v: not _is_int(v) or lo <= v <= hi  # type: ignore[operator]

    def _object(self, schema: Mapping[str, Any]) -> Check | None:
        props = schema.get("properties", {})
        required = schema.get("required", [])
        extra = schema.get("additionalProperties", True)
        if not isinstance(props, Mapping) or not isinstance(required, list):
            raise Unsupported("properties/required")
        if not props and not required and extra is True:
            return None
        checks = {name: self.compile(sub) for name, sub in props.items()}
        needed = tuple(required)
        if extra is True:
            other: Check | None = None
        elif extra is False:
            other = lambda _v: False  # noqa: E731
        else:
            other = self.compile(extra)

        def check(v: object) -> bool:
            if not isinstance(v, dict):
                return True
            for name in needed:
                if name not in v:
                    return False
            for name, value in v.items():
                sub = checks.get(name)
                if sub is not None:
                    if not sub(value):
                        return False
                elif other is not None and not other(value):
                    return False
            return True

        return check

    def _items(self, schema: Mapping[str, Any]) -> Check | None:
        if "items" not in schema:
            return None
        items = schema["items"]
        if not isinstance(items, Mapping):
            raise Unsupported("items as a list")
        sub = self.compile(items)
        return lambda v: not isinstance(v, list) or all(sub(x) for x in v)

    def _any_of(self, schema: Mapping[str, Any]) -> Check | None:
        if "anyOf" not in schema:
            return None
        options = schema["anyOf"]
        if not isinstance(options, list) or not options:
            raise Unsupported("anyOf")
        subs = [self.compile(option) for option in options]
        return lambda v: any(sub(v) for sub in subs)
