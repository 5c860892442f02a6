"""The demos, one module each, in the order of docs/patterns.md.

A demo module has ``SUMMARY`` (one line for ``--list``), optionally ``ENV``
(settings of its own, on top of the launcher's) and ``run(stage) -> Verdict``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES: tuple[str, ...] = (
    "fanout",
    "duplicates",
    "retry",
    "deadletter",
    "breaker",
    "backpressure",
    "ordering",
    "outbox",
    "versions",
    "crash",
)


def load(name: str) -> ModuleType:
    if name not in NAMES:
        raise KeyError(name)
    return importlib.import_module(f"lab.demos.{name}")
