"""The Rust types :mod:`fakechv.serde` deserializes into, as serde sees them.

Integers of a width, ``f64``, ``bool``, ``String`` and ``PathBuf``, ``Option``, ``Vec``,
maps, ``serde_json::Value``, unit enums, structs with their fields (defaults, aliases,
``#[serde(flatten)]``, ``deny_unknown_fields``), types with a hand-written
``Deserialize`` (:class:`Custom`) and types named for later (:class:`Ref`). Each
carries its visitor's ``expecting`` wording.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NO_DEFAULT",
    "AnyValue",
    "Bool",
    "Custom",
    "Enum",
    "Field",
    "Float",
    "Int",
    "MapOf",
    "Opt",
    "Ref",
    "Seq",
    "Str",
    "Struct",
    "Type",
]


class Type:
    """A Rust type serde deserializes; ``expecting`` is its visitor's wording."""

    expecting = "a value"


@dataclass(frozen=True)
class Int(Type):
    rust: str = "u64"
    #: the visitor's wording when it is not the type name ("a nonzero u64")
    expect: str | None = None

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return self.expect or self.rust


@dataclass(frozen=True)
class Float(Type):
    expecting = "f64"


@dataclass(frozen=True)
class Bool(Type):
    expecting = "a boolean"


@dataclass(frozen=True)
class Str(Type):
    """``String`` ("a string") or ``PathBuf`` ("path string")."""

    path: bool = False
    #: the visitor's wording when it is not a plain string's ("IP address")
    expect: str | None = None

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return self.expect or ("path string" if self.path else "a string")


@dataclass(frozen=True)
class Opt(Type):
    inner: Type

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return "option"


@dataclass(frozen=True)
class Seq(Type):
    item: Type
    expecting = "a sequence"


@dataclass(frozen=True)
class MapOf(Type):
    value: Type
    expecting = "a map"


@dataclass(frozen=True)
class AnyValue(Type):
    """``serde_json::Value``: any JSON, kept as is."""

    expecting = "any valid JSON value"


@dataclass(frozen=True)
class Custom(Type):
    """A type with a hand-written ``Deserialize``: read as ``base``, then ``convert``
    turns the value into the stored one or raises an unpositioned :class:`SerdeError`
    (a custom error: the enclosing struct, map or sequence positions it where the
    reader stands once it is closed)."""

    name: str
    base: Type
    convert: Callable[[Any], Any] = field(compare=False)

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return self.base.expecting


@dataclass(frozen=True)
class Enum(Type):
    """A unit-variant enum, externally tagged (``"Tty"`` or ``{"Tty": null}``)."""

    name: str
    variants: tuple[str, ...]

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return f"enum {self.name}"


_MISSING = object()
#: a :class:`Field` without ``#[serde(default)]``
NO_DEFAULT: Any = _MISSING


@dataclass(frozen=True)
class Field:
    """One struct field: its name, type, and what a missing field becomes.

    ``default`` is the value of ``#[serde(default)]`` (a callable is called);
    without one a missing ``Option`` is ``None`` and anything else is an error.
    ``flatten`` names the flattened struct (``#[serde(flatten)]``) the field
    belongs to, if any; fields of one flattened struct share a name.
    """

    name: str
    type: Type
    default: Any = _MISSING
    flatten: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    def default_value(self) -> Any:
        value = self.default
        return value() if callable(value) else value


@dataclass(frozen=True)
class Struct(Type):
    """A struct with named fields (declaration order). ``resolve`` turns a field's
    ``Ref`` name into its type lazily, so the model may be recursive."""

    name: str
    fields: tuple[Field, ...]
    #: values of absent Option fields are dropped from the result (not None)
    drop_none: bool = True
    #: ``#[serde(deny_unknown_fields)]``
    deny_unknown: bool = False
    _index: dict[str, Field] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for f in self.fields:
            for key in (f.name, *f.aliases):
                self._index.setdefault(key, f)

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return f"struct {self.name}"

    def lookup(self, key: str) -> Field | None:
        return self._index.get(key)

    @property
    def flattened(self) -> bool:
        return any(f.flatten is not None for f in self.fields)


@dataclass(frozen=True)
class Ref(Type):
    """A named type resolved on use (see :func:`from_slice`'s ``resolve``)."""

    name: str
