"""A scenario file's parse is kept by its bytes: the kept one is the fresh one, lines and
all; an edit, a damaged entry or a file that fails is parsed again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.scenario import yamllines
from harness.scenario.model import ScenarioError
from harness.scenario.yamllines import YamlMap, YamlSeq, parse_yaml

TEXT = """\
name: kept
profiles: [v52, v53]
steps:
  - run: define domain.xml
  - expect:
      vda: "00:04.0"
      07: 1.5
      true: ~
"""


def _same(a: Any, b: Any) -> None:
    """Equal values of the same types, with the same line numbers everywhere."""
    assert type(a) is type(b) and a == b
    for attr in ("line", "key_lines", "value_lines", "plain_keys", "item_lines"):
        assert getattr(a, attr, None) == getattr(b, attr, None), attr
    if isinstance(a, dict):
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, list):
        for x, y in zip(a, b, strict=True):
            _same(x, y)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "bdf-harness" / "scenarios"


def _no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yaml, "load", lambda *a, **k: pytest.fail("parsed again"))
    monkeypatch.setattr(yaml, "parse", lambda *a, **k: pytest.fail("parsed again"))


def test_a_kept_parse_is_the_fresh_one(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = yamllines._load(TEXT, "a.yaml")
    first = parse_yaml(TEXT, "a.yaml")
    (entry,) = cache.iterdir()
    with monkeypatch.context() as patch:
        _no_parse(patch)
        kept = parse_yaml(TEXT, "b.yaml")
        again = parse_yaml(TEXT, "b.yaml")
    for value in (first, kept):
        _same(value, fresh)
    assert isinstance(kept, YamlMap) and isinstance(kept["steps"], YamlSeq)
    assert kept["steps"][1]["expect"]["vda"] == "00:04.0"  # a BDF, not a base-60 number
    assert list(kept["steps"][1]["expect"]) == ["vda", 7, True]
    kept["name"] = "changed"  # each caller has its own
    assert again["name"] == "kept" and again is not kept
    entry.write_bytes(b"\x00damaged")
    _same(parse_yaml(TEXT, "a.yaml"), fresh)
    _same(parse_yaml(TEXT, "a.yaml"), fresh)  # the damaged entry was replaced


def test_an_edited_file_is_parsed_afresh(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parse_yaml(TEXT, "a.yaml")
    edited = TEXT.replace("name: kept", "# moved down a line\nname: edited")
    value = parse_yaml(edited, "a.yaml")
    assert value["name"] == "edited" and value.key_lines["name"] == 2
    assert len(list(cache.iterdir())) == 2
    monkeypatch.setattr(yamllines, "_stamp", lambda: "another loader")
    with monkeypatch.context() as patch:
        patch.setattr(yamllines, "_load", lambda *a: pytest.fail("not parsed"))
        with pytest.raises(pytest.fail.Exception):
            parse_yaml(TEXT, "a.yaml")  # another loader's parse is not taken


def test_a_file_that_fails_is_not_kept(cache: Path) -> None:
    bad = "name: x\nsteps:\n  - &a run: define\n  - *a\n"
    for _ in range(2):
        with pytest.raises(ScenarioError, match=r"^bad\.yaml:4: YAML aliases"):
            parse_yaml(bad, "bad.yaml")
    assert not cache.exists() or not list(cache.iterdir())
