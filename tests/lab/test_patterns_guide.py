"""docs/patterns.md cannot go stale: every file, function, test, command and demo it names exists.

The names are read from the guide itself (its `code spans`, its links and
its pictures), not from a list kept here; functions are imported, tests found
by walking their file's syntax tree.
"""

from __future__ import annotations

import ast
import importlib
import re
from types import ModuleType

import pytest
from django.core.management import get_commands
from django.urls import Resolver404, resolve

from lab import demos
from tests.conftest import REPO

GUIDE = REPO / "docs" / "patterns.md"
TEXT = GUIDE.read_text()
SPANS = re.findall(r"`([^`\n]+)`", TEXT)
PACKAGES = ("eventbus", "signups", "notifications", "analytics", "lab", "ops", "project", "devinbox", "scripts")
DOTTED = re.compile(rf"^(?:{'|'.join(PACKAGES)})(?:\.\w+)+$")
PATH = re.compile(r"^[\w.-]+(?:/[\w.-]+)*(?:/|\.\w+)$")
TEST = re.compile(r"^(tests/[\w/]+\.py)::(\w+)$")

SECTIONS = [
    "Producers, brokers and consumers",
    "Point-to-point queues",
    "Publish/subscribe fan-out",
    "Decoupling and independent scaling",
    "At-least-once delivery and duplicates",
    "Idempotent consumers",
    "Ordering",
    "Debugging an asynchronous flow",
    "Eventual consistency",
    "Retries with backoff",
    "Dead-letter queues",
    "Backpressure: rate limits, shedding, deferring",
    "Circuit breakers",
    "The transactional outbox",
    "Event contracts and schema evolution",
    "CAP and PACELC",
    "Use cases",
]
PARTS = ("**Idea.**", "**Failure prevented.**", "**Where.**", "**Proof.**", "**Demo.**", "**Limits.**")


def sections() -> dict[str, str]:
    chunks = re.split(r"^## (.+)$", TEXT, flags=re.MULTILINE)
    return dict(zip(chunks[1::2], chunks[2::2], strict=True))


def resolve_dotted(name: str) -> object:
    """Import the longest module prefix of ``name``, then walk the attributes after it."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(name)


def test_the_sections_are_the_issues_in_its_order() -> None:
    assert list(sections()) == SECTIONS


@pytest.mark.parametrize("title", [t for t in SECTIONS if t not in ("CAP and PACELC", "Use cases")])
def test_each_concept_has_idea_failure_place_proof_demo_and_limits(title: str) -> None:
    body = sections()[title]
    positions = [body.find(part) for part in PARTS]
    assert -1 not in positions, f"{title}: missing {[p for p, i in zip(PARTS, positions, strict=True) if i < 0]}"
    assert positions == sorted(positions)
    assert "tests/" in body.split("**Proof.**")[1].split("**Demo.**")[0]
    assert "manage.py demo " in body.split("**Demo.**")[1]


def test_every_named_code_object_exists() -> None:
    names = [s for s in SPANS if DOTTED.match(s)]
    assert len(names) > 40
    missing = []
    for name in names:
        try:
            resolve_dotted(name)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{name}: {exc}")
    assert not missing


def test_every_named_test_exists() -> None:
    named = [TEST.match(s) for s in SPANS]
    tests = [(m.group(1), m.group(2)) for m in named if m]
    assert len(tests) > 25
    missing = []
    for path, name in tests:
        file = REPO / path
        if not file.is_file():
            missing.append(path)
            continue
        defined = {
            node.name
            for node in ast.walk(ast.parse(file.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if name not in defined:
            missing.append(f"{path}::{name}")
    assert not missing


def test_every_named_file_exists() -> None:
    paths = [s for s in SPANS if PATH.match(s) and "/" in s and not s.startswith("/")]
    linked = [
        str((GUIDE.parent / target).relative_to(REPO))
        for target in re.findall(r"\]\(([^)#:]+)\)", TEXT)
        if not target.startswith("http")
    ]
    assert paths and linked
    assert [p for p in [*paths, *linked] if not (REPO / p).exists()] == []


def test_every_named_page_is_a_url_of_the_site() -> None:
    pages = [s for s in SPANS if re.match(r"^/[\w/.-]*$", s)]
    assert pages
    unknown = []
    for page in pages:
        try:
            resolve(page)
        except Resolver404:
            unknown.append(page)
    assert not unknown


def test_every_named_command_and_demo_exists() -> None:
    commands = get_commands()
    runs = [s.split() for s in SPANS if s.startswith("manage.py ")]
    assert [r[1] for r in runs if r[1] not in commands] == []
    named_demos = {r[2] for r in runs if r[1] == "demo" and len(r) > 2 and not r[2].startswith("-")}
    assert named_demos == set(demos.NAMES), "the guide names every demo, and only demos that exist"


def test_the_resolver_finds_a_module_of_the_project() -> None:
    assert isinstance(resolve_dotted("eventbus.outbox.publish"), ModuleType)
    with pytest.raises(AttributeError):
        resolve_dotted("eventbus.outbox.publish.no_such_function")
