"""The shape of the code, kept by tests: the layering contract of pyproject.toml and no import cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_layering_contract_holds():
    """import-linter's contracts (``[tool.importlinter]`` in pyproject.toml) are all kept."""
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    result = subprocess.run([sys.executable, "-c", command, "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " 0 broken" in result.stdout


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_counting_imports_inside_functions():
    """No two modules import each other, directly or through others; imports inside functions
    count, ``if TYPE_CHECKING:`` imports do not. A package's ``__init__`` is its face: importing the
    bare package name is not an edge into its modules."""
    graph = grimp.build_graph("transeg", exclude_type_checking_imports=True, cache_dir=None)
    packages = {m for m in graph.modules if (ROOT / "src" / Path(*m.split("."))).is_dir()}
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d not in packages}
             for m in graph.modules}
    assert _strongly_connected(edges) == []


def test_the_cycle_check_finds_a_cycle():
    """The check itself: a two-module loop is reported."""
    assert _strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
