"""A PostgreSQL database of the benchmark's own for ``--postgres``: created, then dropped.

The machine's PostgreSQL (127.0.0.1:5432, trust authentication, user
``postgres``) is shared: only the database named here is ever dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

DATABASE = "eventdemo_bench"
_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"


def _execute(statement: str) -> None:
    import psycopg

    with psycopg.connect(_ADMIN, autocommit=True, connect_timeout=5) as connection:
        connection.execute(statement)


def server_version() -> str:
    import psycopg

    with psycopg.connect(_ADMIN, connect_timeout=5) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


@contextmanager
def database() -> Iterator[str]:
    """A fresh, empty ``eventdemo_bench`` for the duration; yields its URL."""
    _execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')  # left over by a killed run
    _execute(f'CREATE DATABASE "{DATABASE}"')
    try:
        yield URL
    finally:
        _execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
