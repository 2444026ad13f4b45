"""A pytest plugin that records the API requests tests send to fakechv.

``pytest -p harness.differential.recorder --record-sequences FILE TESTS`` runs the tests
as usual and writes, for every test, the requests each fakechv API (one
:class:`fakechv.api.Api`: one emulated VMM) received, in order: method, path, body,
how many file descriptors came with it, and the status fakechv gave. The differential
(:mod:`harness.differential.rules`) turns each of these sessions into a sequence and
sends it to a fresh fakechv and to the real binary.

Recording happens in ``Api.handle``, which every request to an in-process fakechv
reaches (through its socket or an in-process transport); it changes nothing the tests
see.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RECORD_OPTION", "Recorder"]

RECORD_OPTION = "--record-sequences"


class Recorder:
    """Collects the sessions of each test and writes them at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tests: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None
        self._sessions: dict[int, dict[str, Any]] = {}
        self._keep: list[Any] = []  # the APIs of the running test, so that ids stay unique
        self._lock = threading.Lock()
        self._patch()

    def _patch(self) -> None:
        from fakechv.api import Api

        original = Api.handle
        recorder = self

        async def handle(api: Any, request: Any) -> Any:
            response = await original(api, request)
            recorder.note(api, request, response)
            return response

        Api.handle = handle  # type: ignore[method-assign,assignment]

    def note(self, api: Any, request: Any, response: Any) -> None:
        with self._lock:
            test = self._current
            if test is None:
                return
            session = self._sessions.get(id(api))
            if session is None:
                session = {"profile": api.profile.name, "requests": []}
                self._sessions[id(api)] = session
                self._keep.append(api)
                test["sessions"].append(session)
            session["requests"].append(
                {
                    "method": request.method,
                    "path": request.path,
                    "body": request.body.decode("latin-1") if request.body else None,
                    "fds": len(request.fds),
                    "status": response.status,
                }
            )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, None, None]:
        code = getattr(getattr(item, "function", None), "__code__", None)
        test: dict[str, Any] = {
            "nodeid": item.nodeid,
            "file": str(item.path),
            "line": code.co_firstlineno if code is not None else 0,
            "sessions": [],
        }
        with self._lock:
            self._current = test
            self._sessions = {}
        try:
            yield
        finally:
            with self._lock:
                self._current = None
                self._keep.clear()
                self._sessions = {}
            if test["sessions"]:
                self.tests.append(test)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"tests": self.tests}, indent=1))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        RECORD_OPTION,
        metavar="FILE",
        default=None,
        help="write the fakechv API requests of every test to FILE (JSON)",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption(RECORD_OPTION)
    if path:
        config.pluginmanager.register(Recorder(Path(path)), "bdf-differential-recorder")
