"""``settings.DATABASES["default"]`` from a DATABASE_URL, with what SQLite needs to be shared by many processes."""

from __future__ import annotations

from typing import Any

import dj_database_url


def database(url: str, *, conn_max_age: int, sqlite_test_name: str) -> dict[str, Any]:
    """The database at ``url``; on SQLite, with the options below and ``sqlite_test_name`` as the test database."""
    config: dict[str, Any] = dj_database_url.parse(url, conn_max_age=conn_max_age, conn_health_checks=True)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # The web process, several worker pools, beat and the relay share one
        # SQLite file. Without WAL, a busy timeout and IMMEDIATE transactions,
        # concurrent writers fail with "database is locked" under load.
        # https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-transaction-behavior
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA busy_timeout=20000",
        }
        # A worker subprocess cannot see an in-memory test database: tests use a file.
        config["TEST"] = {"NAME": sqlite_test_name}
    return config
