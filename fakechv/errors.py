"""CHV API errors: the message chain and the status each release gives it.

CHV answers an API error with a JSON array of the error's ``Display`` chain from
outer to inner (``["Error from API", "The disk could not be added to the VM",
...]``, vmm/src/api/http/mod.rs ``error_response``). The status depends on the
release and on the inner ``VmError`` (``api_error_status_code``): see
:func:`status_for`.
"""

from __future__ import annotations

import enum
import json
import os
import unicodedata

from fakechv.profiles import Profile

__all__ = [
    "API_ERROR",
    "DM_ERROR",
    "ApiError",
    "ErrorKind",
    "api_error",
    "brief",
    "error_body",
    "status_for",
]

#: the outermost message of every API error
API_ERROR = "Error from API"
#: the message in front of every ``DeviceManagerError``
DM_ERROR = "Error from device manager"


class ErrorKind(enum.Enum):
    """What kind of failure an :class:`ApiError` is (picks the HTTP status)."""

    NOT_CREATED = "VmNotCreated"
    MISSING_CONFIG = "VmMissingConfig"
    UNKNOWN_DEVICE = "UnknownDeviceId"
    NO_DEVICE_TO_REMOVE = "NoDeviceToRemove"
    VALIDATION = "ConfigValidation"
    NOT_UNIQUE = "IdentifierNotUnique"
    ALLOCATION = "Allocation"
    INVALID_STATE = "InvalidState"
    BAD_REQUEST = "BadRequest"
    NOT_FOUND = "NotFound"
    TOO_MANY = "TooManyRequests"
    INTERNAL = "Internal"


class ChainError(Exception):
    """A failure below the device manager, as CHV's error chain: its ``messages``."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(": ".join(messages))
        self.messages = messages


def io_error_text(exc: OSError) -> str:
    """An ``std::io::Error`` from the OS as Rust displays it."""
    code = exc.errno or 0
    return f"{os.strerror(code)} (os error {code})"


#: the general categories of the grapheme extenders Rust escapes in ``{:?}``
_GRAPHEME_EXTEND = frozenset({"Mn", "Me"})
#: the characters ``{:?}`` writes with a backslash escape of their own
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def debug_str(text: str) -> str:
    """Rust's ``{:?}`` of a str (or of a UTF-8 path): quoted, with the escapes of
    ``char::escape_debug``: quotes, backslashes, ``\\0 \\t \\r \\n``, and ``\\u{..}`` for
    what is not printable or extends a grapheme."""
    out = ['"']
    for ch in text:
        escaped = _ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch != " " and (not ch.isprintable() or unicodedata.category(ch) in _GRAPHEME_EXTEND):
            # not printable (controls, format characters, spaces other than ' ', private
            # use, unassigned) or a grapheme extender: \u{..} (real v53 checked)
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class ApiError(Exception):
    """An error CHV reports through the HTTP API."""

    def __init__(self, messages: list[str], kind: ErrorKind = ErrorKind.INTERNAL) -> None:
        super().__init__(": ".join(messages))
        self.messages = list(messages)
        self.kind = kind
        #: the VMM keeps the state changed before the failure (CHV leaves a trace)
        self.commit = False
        #: CHV's VMM thread panics here (what CHV would say is in ``messages``)
        self.panic = False

    def wrap(self, *outer: str) -> ApiError:
        """The same error with more outer messages in front."""
        err = ApiError([*outer, *self.messages], self.kind)
        err.panic = self.panic
        return err


#: what CHV's HTTP thread answers once the VMM thread has panicked: the request that
#: panicked it, then every later one until the process exits (vmm/src/api/mod.rs)
PANIC_ANSWER = ["Error from API", "API response receive error", "receiving on a closed channel"]
AFTER_PANIC_ANSWER = ["Error from API", "API request send error", "sending on a closed channel"]


def api_error(action: str, *inner: str, kind: ErrorKind = ErrorKind.INTERNAL) -> ApiError:
    """The API error of ``action``: ``["Error from API", action, *inner]``."""
    return ApiError([API_ERROR, action, *inner], kind)


def status_for(kind: ErrorKind, profile: Profile) -> int:
    """The HTTP status ``profile``'s CHV gives an error of ``kind``."""
    if kind in (ErrorKind.BAD_REQUEST,):
        return 400
    if kind is ErrorKind.NOT_FOUND:
        return 404
    if kind is ErrorKind.TOO_MANY:
        return 429
    if not profile.error_status_codes:
        return 500
    if kind in (ErrorKind.NOT_CREATED, ErrorKind.MISSING_CONFIG):
        return 404
    if profile.device_error_status_codes:
        if kind in (ErrorKind.UNKNOWN_DEVICE, ErrorKind.NO_DEVICE_TO_REMOVE):
            return 404
        if kind is ErrorKind.NOT_UNIQUE:
            return 409
        if kind is ErrorKind.VALIDATION:
            return 400
    return 500


def error_body(messages: list[str]) -> bytes:
    """CHV's error body: a compact JSON array of strings."""
    return json.dumps(messages, separators=(",", ":"), ensure_ascii=False).encode()


def brief(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: what a message quotes of a bad value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
