"""The bus imports nothing from its host: no module under eventbus/ names project/ or one of this project's apps.

Read off the source with ``ast``: every ``import``/``from ... import`` statement,
and every ``import_module``/``import_string`` call with a literal name, in
every module of the package (migrations and management commands included).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
BUS = REPO / "eventbus"
DYNAMIC_IMPORTERS = {"import_module", "import_string", "__import__"}


def host_packages() -> set[str]:
    """Every top-level Python package of this repository but the bus: the project, its apps, its tools."""
    return {
        path.name
        for path in REPO.iterdir()
        if path.is_dir()
        and path.name != "eventbus"
        and ((path / "__init__.py").exists() or (path / "apps.py").exists())
    }


def imported_names(source: str) -> Iterator[tuple[int, str]]:
    """``(line, dotted name)`` of each absolute import in ``source``, static or through a literal."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if function in DYNAMIC_IMPORTERS and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value.replace(":", ".")


def host_imports(source: str, host: set[str]) -> list[str]:
    return [f"{line}: {name}" for line, name in imported_names(source) if name.split(".")[0] in host]


def test_the_walk_sees_the_host_and_its_imports() -> None:
    # given the walk works at all (an empty package list or a blind parser would make the next test pass)
    host = host_packages()
    assert {"project", "signups", "notifications", "analytics", "telemetry", "ops", "devinbox", "lab"} <= host
    source = "from project import queues\nimport signups.events\nimportlib.import_module('telemetry.door')\n"
    assert host_imports(source, host) == ["1: project", "2: signups.events", "3: telemetry.door"]
    assert host_imports("from eventbus.conf import SETTINGS\nimport celery\n", host) == []


def test_no_module_of_the_bus_imports_its_host() -> None:
    host = host_packages()
    modules = sorted(BUS.rglob("*.py"))
    assert len(modules) > 50, "the walk found the bus's modules"
    found = {
        str(path.relative_to(REPO)): imports for path in modules if (imports := host_imports(path.read_text(), host))
    }
    assert found == {}, f"the bus must take these from settings or the host's call, not import them: {found}"
