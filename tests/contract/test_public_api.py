"""Outside eventbus/, code imports only the bus's public names (DESIGN.md, "Apps and their rooms").

Every module of the apps, project/, lab/ and scripts/ (not tests/, not bench/)
is parsed, and each ``import eventbus...`` / ``from eventbus... import ...``
in it, at any depth (inside functions too), is checked against the public
list: the names of ``eventbus.__all__`` and the public modules below. A
failure names the file, the line and the import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventbus
from eventbus import doors, ops_api

ROOT = Path(__file__).resolve().parents[2]

NOT_CHECKED = {"eventbus", "tests", "bench", "var"}
"""Top-level folders outside the rule: the bus itself, its tests, benchmarks, runtime data."""

PUBLIC_MODULES = {
    "eventbus": "producers and consumers: publish, subscriber, event_type, Envelope, RetryPolicy, ...",
    "eventbus.ops_api": "what operators read and do",
    "eventbus.doors": "the request path's and the fast path's narrow doors",
    "eventbus.models": "the bus's tables, for reading (ops_api's docstring says why)",
    "eventbus.admin": "the admin base for rows the bus writes (ReadOnlyAdmin, timeline_link)",
    "eventbus.management.progress": "the progress bar of the bus's commands, for the host's long commands too",
}

HOST_WIRING = {
    "eventbus.conf": "project/settings.py reads the bus's settings (eventbus/conf.py's table) from the environment",
    "eventbus.celery_settings": "project/settings.py takes the CELERY_* settings and beat schedule the bus requires",
    "eventbus.observability.context": "project/logging.py's filter writes the bus's context fields",
    "eventbus.operations.checks": "project/startup_checks.py checks email countdowns against the visibility timeout",
    "eventbus.protection.tokenbucket": "project/startup_checks.py checks EMAIL_RATE_LIMIT; to be `from eventbus import "
    "parse_rate` (settings.py belongs to another change)",
}
"""What the host wires at start, allowed in project/ only: the host-integration work of issue #24
reshapes it, and test_host_wiring_names_only_what_project_imports keeps this list from outliving it."""


def checked_files() -> Iterator[Path]:
    yield from sorted(ROOT.glob("*.py"))
    for folder in sorted(p for p in ROOT.iterdir() if p.is_dir() and not p.is_symlink()):
        if folder.name.startswith(".") or folder.name in NOT_CHECKED:
            continue
        yield from sorted(folder.rglob("*.py"))


def is_the_bus(module: str | None) -> bool:
    return module is not None and (module == "eventbus" or module.startswith("eventbus."))


def eventbus_imports(source: str) -> Iterator[tuple[int, str, str | None]]:
    """Each import of the bus in ``source``: (line, module, name imported from it or None)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_the_bus(alias.name):
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and is_the_bus(node.module):
            for alias in node.names:
                yield node.lineno, str(node.module), alias.name


def refusals(source: str, *, host: bool = False) -> list[str]:
    """Why each non-public import of the bus in ``source`` is refused; ``host``: project/'s wiring allowed."""
    allowed = set(PUBLIC_MODULES) | (set(HOST_WIRING) if host else set())
    found = []
    for line, module, name in eventbus_imports(source):
        if name is not None and f"{module}.{name}" in allowed:
            continue  # a public module, imported from its package
        if module not in allowed:
            what = f"from {module} import {name}" if name else f"import {module}"
            found.append(f"line {line}: {what} (not public)")
        elif module == "eventbus" and name is not None and name not in eventbus.__all__:
            found.append(f"line {line}: from eventbus import {name} (not in eventbus.__all__)")
    return found


def test_apps_import_only_the_bus_public_names() -> None:
    offences = []
    for path in checked_files():
        relative = path.relative_to(ROOT)
        host = relative.parts[0] == "project"
        offences += [f"{relative} {why}" for why in refusals(path.read_text(encoding="utf-8"), host=host)]
    assert not offences, "imports of the bus's internals outside eventbus/:\n" + "\n".join(offences)


def test_the_walk_covers_the_apps_project_and_lab() -> None:
    folders = {path.relative_to(ROOT).parts[0] for path in checked_files()}
    assert {"ops", "telemetry", "signups", "notifications", "analytics", "lab", "devinbox", "project"} <= folders
    assert not folders & NOT_CHECKED


def test_the_check_refuses_internals_at_any_depth_and_names_them() -> None:
    source = (
        "import eventbus.redis\n"
        "from eventbus import publish, ops_api\n"
        "from eventbus import registry\n"
        "def f():\n"
        "    from eventbus.protection.breaker import OPEN\n"
        "    from eventbus.models import OutboxEvent\n"
    )
    assert refusals(source) == [
        "line 1: import eventbus.redis (not public)",
        "line 3: from eventbus import registry (not in eventbus.__all__)",
        "line 5: from eventbus.protection.breaker import OPEN (not public)",
    ]


def test_host_wiring_is_refused_outside_project() -> None:
    assert refusals("from eventbus.operations import checks\n") == [
        "line 1: from eventbus.operations import checks (not public)"
    ]
    assert refusals("from eventbus.operations import checks\n", host=True) == []


def test_host_wiring_names_only_what_project_imports() -> None:
    imported = set()
    for path in (ROOT / "project").rglob("*.py"):
        for _, module, name in eventbus_imports(path.read_text(encoding="utf-8")):
            imported |= {module, f"{module}.{name}"}
    assert set(HOST_WIRING) <= imported, f"no longer imported by project/: {sorted(set(HOST_WIRING) - imported)}"


@pytest.mark.parametrize("module", [eventbus, ops_api, doors], ids=lambda m: m.__name__)
def test_every_public_name_resolves(module: object) -> None:
    for name in module.__all__:  # type: ignore[attr-defined]
        assert getattr(module, name) is not None, name
