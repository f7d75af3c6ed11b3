"""The CLI's import graph: no circle among its modules, no command module importing another, nothing importing the CLI.

Read from the source with `ast` (no module is imported), every import counted, also those inside functions.
`python tests/test_cli_imports.py` prints the graph, one module and what it imports of the package a line.
"""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.light  # reads source files only

SRC = Path(os.environ.get("MPTCPLAB_SRC") or Path(__file__).resolve().parent.parent / "src")
PACKAGE = "mptcplab"
CLI = f"{PACKAGE}.cli"
#: the CLI modules that are not commands: the entry point (it registers every command module) and the shared plumbing
NOT_COMMANDS = {CLI, f"{CLI}.__main__", f"{CLI}.common"}


def module_name(path: Path) -> str:
    """mptcplab/cli/store.py -> mptcplab.cli.store; mptcplab/cli/__init__.py -> mptcplab.cli."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports (absolute or relative, at the top or in a function).

    `from . import x` and `from .common import y` both count; a name imported from a module counts as the module
    itself unless the name is a module of `known` (a submodule).
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            found.update(subs or [target])
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def graph() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports."""
    paths = sorted((SRC / PACKAGE).rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, known) & known for p in paths}


def is_cli(module: str) -> bool:
    """mptcplab.cli and its modules (and the cli_*.py modules of the layout before the package)."""
    return module == CLI or module.startswith((CLI + ".", CLI + "_"))


def cli_graph() -> dict[str, set[str]]:
    """The CLI modules -> the CLI modules they import."""
    return {m: {t for t in targets if is_cli(t)} for m, targets in graph().items() if is_cli(m)}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every circle of the graph, each once, as the list of modules along it (depth-first search)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(node: str, stack: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                circle = stack[stack.index(nxt):]
                if frozenset(circle) not in seen:
                    seen.add(frozenset(circle))
                    found.append(circle + [nxt])
            elif len(stack) < len(edges):
                walk(nxt, stack + [nxt])

    for start in sorted(edges):
        walk(start, [start])
    return found


def test_the_cycle_finder_finds_a_circle() -> None:
    """The check below can fail: a circle of three and a self-import are found, a tree is not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"a"}}) == [["a", "a"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circle_among_the_cli_modules() -> None:
    edges = cli_graph()
    assert f"{CLI}.common" in edges and f"{CLI}.run" in edges, sorted(edges)  # the walk saw the CLI package
    assert cycles(edges) == []


def test_no_command_module_imports_another_and_common_imports_none() -> None:
    edges = cli_graph()
    commands = {m for m in edges if m not in NOT_COMMANDS}
    assert len(commands) >= 6, sorted(commands)
    wrong = {m: sorted(t & commands) for m, t in edges.items() if m != CLI and t & commands}
    assert wrong == {}, f"only {CLI} (the entry point) imports command modules: {wrong}"


def test_nothing_below_the_cli_imports_it() -> None:
    wrong = {m: sorted(t for t in targets if is_cli(t)) for m, targets in graph().items()
             if not is_cli(m) and any(is_cli(t) for t in targets)}
    assert wrong == {}


if __name__ == "__main__":  # python tests/test_cli_imports.py: the CLI's import graph, then its circles (none)
    for module, targets in sorted(cli_graph().items()):
        print(f"{module} -> {', '.join(sorted(targets)) or '-'}")
    found = cycles(cli_graph())
    print("circles: " + ("; ".join(" -> ".join(c) for c in found) if found else "none"))
    sys.exit(1 if found else 0)
