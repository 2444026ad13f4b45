"""Every ``bdf-harness`` subcommand explains itself: a description and an example."""

from __future__ import annotations

import argparse

import pytest

from harness.cli import _parser, main


def _subcommands() -> list[str]:
    parser = _parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


@pytest.mark.parametrize("command", _subcommands())
def test_help_has_a_description_and_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    _usage, _sep, rest = text.partition("\n\n")
    assert rest.strip() and not rest.lstrip().startswith(("positional", "options")), text
    assert "example" in text and f"bdf-harness {command}" in text.split("example", 1)[1]
