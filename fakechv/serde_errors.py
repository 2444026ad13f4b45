"""What serde_json says when it refuses a body: :class:`SerdeError` (its Display, with
line and column) and the wording of its messages: serde's ``Unexpected`` and
``Expected``, the list of variants or fields, and floats printed the way serde_json's
``zmij`` does (:func:`format_float`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fakechv.errors import debug_str
from fakechv.serde_types import Type

__all__ = ["SerdeError", "format_float", "invalid_type", "invalid_value", "one_of"]


class SerdeError(Exception):
    """What serde_json says; ``str()`` is its Display (``... at line L column C``)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line == 0:
            return self.message
        return f"{self.message} at line {self.line} column {self.column}"

    @property
    def positioned(self) -> bool:
        return self.line != 0


# --------------------------------------------------------------------------- messages
def format_float(value: float) -> str:
    """A double as serde_json's ``zmij`` prints it: the shortest digits, fixed
    notation for decimal exponents -5..15 (``100.0``, ``0.00001``), else
    ``1e+20`` / ``1.5e-7``; ``inf``, ``-inf``, ``NaN``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0.0"
    text = repr(abs(value))  # the shortest digits that read back as the same double
    if "e" in text:
        significand, _, exp_part = text.partition("e")
        digits, exponent = significand.replace(".", ""), int(exp_part)
    else:
        whole, _, frac = text.partition(".")
        if whole != "0":
            digits, exponent = whole + frac, len(whole) - 1
        else:
            stripped = frac.lstrip("0")
            digits, exponent = stripped, -(len(frac) - len(stripped)) - 1
    digits = digits.rstrip("0") or "0"
    if -5 <= exponent <= 15:
        if len(digits) - 1 <= exponent:
            return sign + digits + "0" * (exponent + 1 - len(digits)) + ".0"
        if exponent >= 0:
            return sign + digits[: exponent + 1] + "." + digits[exponent + 1 :]
        return sign + "0." + "0" * (-exponent - 1) + digits
    body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{body}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def _unexpected(value: Any) -> str:
    """serde's ``Unexpected`` as serde_json's error type displays it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{format_float(value)}`"
    if isinstance(value, str):
        return f"string {debug_str(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def one_of(names: Sequence[str]) -> str:
    if not names:
        return "there are no variants"
    if len(names) == 1:
        return f"`{names[0]}`"
    if len(names) == 2:
        return f"`{names[0]}` or `{names[1]}`"
    return "one of " + ", ".join(f"`{n}`" for n in names)


def invalid_type(value: Any, exp: Type | str) -> SerdeError:
    wanted = exp if isinstance(exp, str) else exp.expecting
    return SerdeError(f"invalid type: {_unexpected(value)}, expected {wanted}")


def invalid_value(value: Any, exp: Type | str) -> SerdeError:
    wanted = exp if isinstance(exp, str) else exp.expecting
    return SerdeError(f"invalid value: {_unexpected(value)}, expected {wanted}")
