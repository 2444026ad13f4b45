"""The layout rules of the code base (docs/architecture.md), checked on the source:

* no import circle among the modules of ``fakechv`` and ``harness``, counting every
  import (also one inside a function) except those only for type checkers;
* no production module over 700 lines;
* CHV release names (``"v52"``, ``"head"``, ...) are compared only in the release
  tables: ``fakechv/profiles.py`` and the harness's ``harness/chv/capabilities.py``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fakechv", "harness")
MAX_LINES = 700
#: where a release name may be compared with something
RELEASE_TABLES = {"fakechv/profiles.py", "harness/chv/capabilities.py"}
RELEASE_NAME = re.compile(r"^(v5\d|head|cyberus)$")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_init(importer: str, imported: str) -> bool:
    """A package's ``__init__`` importing its own submodule (the registry pattern) and
    the submodule importing the package for a shared name are one unit."""
    return imported.startswith(importer + ".") or importer.startswith(imported + ".")


def test_no_import_circle() -> None:
    graph = _graph()
    pruned = {
        name: {d for d in deps if not _is_package_init(name, d)} for name, deps in graph.items()
    }
    circles = _cycles(pruned)
    assert circles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_cycle_finder_finds_a_circle() -> None:
    """The check above can fail: a made-up circle is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_size(name: str) -> None:
    path = _modules()[name]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_LINES})"


def _release_comparisons(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for operand in operands:
                values = []
                if isinstance(operand, ast.Constant) and isinstance(operand.value, str):
                    values = [operand.value]
                elif isinstance(operand, (ast.Tuple, ast.Set, ast.List)):
                    values = [
                        e.value
                        for e in operand.elts
                        if isinstance(e, ast.Constant) and isinstance(e.value, str)
                    ]
                out += [(node.lineno, v) for v in values if RELEASE_NAME.match(v)]
    return out


def test_release_names_are_compared_only_in_the_release_tables() -> None:
    found = []
    for path in _modules().values():
        rel = str(path.relative_to(ROOT))
        if rel in RELEASE_TABLES:
            continue
        for line, value in _release_comparisons(ast.parse(path.read_text())):
            found.append(f"{rel}:{line} compares with {value!r}")
    assert found == [], "release names compared outside the release tables:\n" + "\n".join(found)


def test_an_in_process_run_loads_neither_http_nor_jsonschema() -> None:
    """aiohttp (the process targets' HTTP client) and jsonschema (an invalid body's
    message) cost a quarter of a second to import: an in-process run that stays valid
    needs neither."""
    code = (
        "import sys\n"
        "from harness.scenario.batch import run_paths\n"
        "run = run_paths(['scenarios/chv-versions/v53-addresses-sent-and-kept.yaml'], jobs=1)\n"
        "assert [s.status for s in run.scenarios] and run.counts().get('passed'), run.counts()\n"
        "print(sorted(m for m in ('aiohttp', 'jsonschema') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
