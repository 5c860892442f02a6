"""Database connections around each task (or batch): reused within CONN_MAX_AGE, never when broken.

Celery's Django fix-up closes every connection before and after every task
unless ``CELERY_DB_REUSE_MAX`` is set; then a task pays a new connection (on
SQLite the PRAGMAs, on PostgreSQL a new server process) each time. With
``DATABASE_CONN_MAX_AGE`` above 0 the settings set it, and this does what
Django does around each request instead: close a connection that is too old,
broke, or was left inside a transaction (a time limit that struck while it
waited for SQLite's write lock leaves the SQLite connection in one), and keep
the rest.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, connections

log = logging.getLogger(__name__)


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
                connection.close_if_unusable_or_obsolete()
        except DatabaseError as exc:
            log.warning("closing database connection %s: %s", connection.alias, exc)
