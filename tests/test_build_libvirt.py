"""tools/build-libvirt.sh leaves the system's apt setup alone: it fetches libvirt's
source with a private apt configuration in its cache directory."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "build-libvirt.sh"


def test_the_script_parses() -> None:
    assert subprocess.run(["sh", "-n", str(SCRIPT)], check=False).returncode == 0


def test_no_system_apt_file_is_written() -> None:
    text = SCRIPT.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "/etc/apt" not in code
    assert "SOURCES_LIST=$APT_DIR/sources.list" in code


def test_the_source_is_fetched_through_the_private_configuration() -> None:
    text = SCRIPT.read_text()
    for option in ("Dir::Etc::SourceList", "Dir::Etc::SourceParts=/dev/null", "Dir::State::Lists"):
        assert option in text
    fetches = re.findall(r"apt-(?:get|cache) (\S+) (update|showsrc|source)", text)
    assert {verb for _opts, verb in fetches} == {"update", "showsrc", "source"}
    assert all(opts == '"$@"' for opts, _verb in fetches), fetches
