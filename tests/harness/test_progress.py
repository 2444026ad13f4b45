"""The status line of long runs (harness.progress): rewritten in place on a terminal
after a couple of seconds, silent in a log unless asked for, plain lines then."""

from __future__ import annotations

import io

import pytest

from harness import progress as progress_module
from harness.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_line_shows_after_two_seconds_and_is_erased(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    out = _Tty()
    status = Progress(stream=out)
    status.plan(3)
    status.update(failed=False)
    assert out.getvalue() == ""  # a short run stays quiet
    clock[0] += 5
    status.update(failed=True)
    assert out.getvalue().endswith("[2/3] runs done, 1 failed, 5s")
    status.close()
    assert out.getvalue().endswith("\r\x1b[K")


def test_in_a_log_it_is_quiet_unless_asked_for() -> None:
    quiet = io.StringIO()
    status = Progress(stream=quiet)
    status.plan(1)
    status.update(failed=False)
    assert quiet.getvalue() == ""
    asked = io.StringIO()
    status = Progress(stream=asked, forced=True)
    status.plan(2)
    status.update(failed=False)
    status.update(failed=False)
    lines = asked.getvalue().splitlines()
    assert lines[0].startswith("progress: [1/2] runs done") and "\r" not in asked.getvalue()
    assert lines[-1].startswith("progress: [2/2] runs done")
