"""No two modules of the bus import each other, directly or around a loop, when they load.

A cycle makes a reader hold two modules in mind at once and makes the import
order matter; the outbox and its fast-path marker once imported each other.
Read off the source with ``ast``: the module-level imports of every module
under eventbus/ (imports inside functions, or under ``if TYPE_CHECKING``, run
later or never, and are left out).
"""

from __future__ import annotations

import ast
from pathlib import Path

BUS = Path(__file__).resolve().parents[2] / "eventbus"


def module_name(path: Path) -> str:
    parts = path.relative_to(BUS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def load_time_imports(source: str, modules: set[str]) -> set[str]:
    """The bus's modules that ``source`` imports at its top level."""
    found: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each loop found by a depth-first walk, as the modules around it."""
    state: dict[str, str] = {}
    found: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                found.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported, path)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return found


def bus_graph() -> dict[str, set[str]]:
    paths = [p for p in BUS.rglob("*.py") if "migrations" not in p.parts]
    modules = {module_name(p) for p in paths}
    return {module_name(p): load_time_imports(p.read_text(), modules) - {module_name(p)} for p in paths}


def test_the_walk_finds_a_loop_where_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    modules = {"eventbus.outbox", "eventbus.outbox.fanout", "eventbus.fastpath.marks"}
    source = "from eventbus.outbox import fanout\nif TYPE_CHECKING:\n    from eventbus.fastpath import marks\n"
    assert load_time_imports(source, modules) == {"eventbus.outbox.fanout"}


def test_the_bus_has_no_import_cycle() -> None:
    graph = bus_graph()
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100, "the walk found the bus's modules and imports"
    assert cycles(graph) == []
