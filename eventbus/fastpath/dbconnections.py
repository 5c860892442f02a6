"""Database connections around each task (or batch): reused within CONN_MAX_AGE, never when broken.

Celery's Django fix-up closes every connection before and after every task
unless ``CELERY_DB_REUSE_MAX`` is set; then a task pays a new connection (on
SQLite the PRAGMAs, on PostgreSQL a new server process) each time. With
``DATABASE_CONN_MAX_AGE`` above 0 the settings set it, and this does what
Django does around each request instead: close a connection that is too old,
broke, or was left inside a transaction (a time limit that struck while it
waited for SQLite's write lock leaves the SQLite connection in one), and keep
the rest.

One difference: Django's health check (``conn_health_checks``, a ``SELECT 1``
before a connection's first use in each request) is skipped for a
connection that finished a task without an error less than
``HEALTH_CHECK_AFTER_IDLE`` seconds ago. A worker runs hundreds of tasks a
second, and on PostgreSQL the check is a round trip per task to a server that
has just answered. A connection that dies within that second fails its next
task's first query, which is retried like any transient failure, and Django
then checks it (an error occurred) and replaces it.

Buys: figure 1, 4,040 connections for 4,040 deliveries -> 2 (13% of pool time on PostgreSQL, 3% on SQLite;
lever 22 not measured alone; docs/benchmarks-levers.md#the-fast-path-module-by-module).
"""

from __future__ import annotations

import logging
import time

from django.db import DatabaseError, connections

log = logging.getLogger(__name__)

HEALTH_CHECK_AFTER_IDLE = 1.0
"""Seconds since a connection last ended a task cleanly after which its next use is health-checked."""


def tidy() -> None:
    """Close the connections that must not serve the next task; keep the others."""
    for connection in connections.all(initialized_only=True):
        try:
            raw = connection.connection
            stuck = connection.in_atomic_block or bool(getattr(raw, "in_transaction", False))
            if stuck or connection.settings_dict.get("CONN_MAX_AGE") == 0:
                connection.close()
                if connection.in_atomic_block:
                    # Django keeps a connection closed inside atomic() marked
                    # as such until the block exits, which it never will here.
                    connection.in_atomic_block = False
                    connection.closed_in_transaction = False
                    connection.needs_rollback = False
                    connection.savepoint_ids = []
                    connection.connection = None
            else:
                recently = getattr(connection, "_eventbus_clean_at", None)
                connection.close_if_unusable_or_obsolete()
                if connection.connection is not None and not connection.errors_occurred:
                    now = time.monotonic()
                    if recently is not None and now - recently < HEALTH_CHECK_AFTER_IDLE:
                        connection.health_check_done = True
                    connection._eventbus_clean_at = now  # type: ignore[attr-defined]
        except DatabaseError as exc:
            log.warning("closing database connection %s: %s", connection.alias, exc)
