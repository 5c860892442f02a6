"""Retention: every table that grows has an age past which its rows go, deleted in bounded chunks.

Each table is one ``Retention`` entry in a registry: the age column, the
setting that says how long rows stay, which rows may go at all, and the task
that deletes them. Each app registers its tables from its
``AppConfig.ready()``, the bus too (eventbus/operations/retention_tables.py, which also
states the invariant that keeps effects exactly once and checks it at start);
the bus imports no app. Beat runs ``eventbus.purge_expired``
(eventbus/tasks.py), which purges every entry it owns; the few that another
task purges (dead letters, raw readings, Celery's result rows) are registered
too, so that ``manage.py retention`` shows every table with its row count,
oldest row and retention.

Bounded work: a chunk is one short transaction (read ``chunk`` ids, delete
them), a table gets at most ``max_chunks`` chunks and ``MAX_SECONDS_PER_TABLE``
per run, and the next run goes on. No run holds a long transaction or a lock
that the request path or the workers would wait on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Min, Q, QuerySet
from django.utils import timezone

log = logging.getLogger(__name__)

PURGE_TASK = "eventbus.purge_expired"
"""The beat task that purges every entry with ``purged_by`` left at its default."""

CHUNK = 1000
"""Rows per DELETE. An outbox row can hold a 45 KB telemetry batch: 1,000 of them are ~45 MB of
write-ahead log, a statement of well under a second; smaller rows cost far less."""
MAX_CHUNKS = 50
"""DELETEs per table and run: 50,000 rows; beat runs every ten minutes, so 300,000 rows an hour a table."""
MAX_SECONDS_PER_TABLE = 5.0
"""A table's share of a run: no chunk is started after it. Per table, so that one table's backlog
cannot starve the others of their purge."""


@dataclass(frozen=True)
class Retention:
    """How long one table's rows are kept, and which of them may go at all."""

    table: str
    """What ``manage.py retention`` calls the table, e.g. ``eventbus.outbox``."""
    model: type[models.Model]
    age_field: str | None
    """The column a row's age is read from (indexed); None for a table kept whole (``bounded_by``)."""
    setting: str | None
    """The setting holding the retention, in ``unit``; None for a table kept whole."""
    why: str
    """The reason for the default, or for keeping the table whole."""
    unit: timedelta = timedelta(days=1)
    purged_by: str = PURGE_TASK
    only: Callable[[], Q] | None = None
    """Rows that may be purged at all, whatever their age (a condition built at purge time)."""

    def keep_for(self) -> timedelta | None:
        """How long rows stay; None when kept whole (no setting, or a setting of 0)."""
        if self.setting is None:
            return None
        amount = getattr(settings, self.setting)
        return amount * self.unit if amount else None

    def expired(self, now: datetime | None = None) -> QuerySet[models.Model]:
        """The rows past their retention that may go (none for a table kept whole)."""
        keep_for = self.keep_for()
        rows = self.model._default_manager.all()
        if keep_for is None or self.age_field is None:
            return rows.none()
        rows = rows.filter(**{f"{self.age_field}__lt": (now or timezone.now()) - keep_for})
        return rows.filter(self.only()) if self.only is not None else rows


_ENTRIES: dict[str, Retention] = {}


def register(entry: Retention) -> None:
    """Add a table (an app calls it from its ``AppConfig.ready()``); two entries under one name are a bug."""
    if entry.table in _ENTRIES and _ENTRIES[entry.table] != entry:
        raise ValueError(f"retention for {entry.table} is registered twice")
    _ENTRIES[entry.table] = entry


def entries() -> list[Retention]:
    """Every registered table, in registration order (the bus's first)."""
    return list(_ENTRIES.values())


def get(table: str) -> Retention:
    return _ENTRIES[table]


def delete_in_chunks(
    rows: Callable[[], QuerySet[models.Model]],
    *,
    chunk: int = CHUNK,
    max_chunks: int = MAX_CHUNKS,
    max_seconds: float = MAX_SECONDS_PER_TABLE,
) -> int:
    """Delete what ``rows()`` selects, ``chunk`` rows per transaction, at most ``max_chunks`` times; returns how many.

    ``rows`` is called for each chunk, so that its cutoff and its conditions
    are read again. The DELETE repeats the selection's conditions (not only
    its ids): a row that stopped qualifying between the read and the delete
    (a dead letter stored for its event meanwhile) stays.
    """
    deadline = time.monotonic() + max_seconds
    deleted = 0
    for _ in range(max_chunks):
        with transaction.atomic():
            selection = rows()
            ids = list(selection.order_by().values_list("pk", flat=True)[:chunk])
            if not ids:
                break
            _, per_model = selection.filter(pk__in=ids).delete()
            deleted += per_model.get(selection.model._meta.label, 0)
        if len(ids) < chunk or time.monotonic() >= deadline:
            break
    return deleted


def purge(entry: Retention, *, chunk: int = CHUNK, max_chunks: int = MAX_CHUNKS) -> int:
    """Delete ``entry``'s expired rows, bounded; returns how many."""
    return delete_in_chunks(entry.expired, chunk=chunk, max_chunks=max_chunks)


def purge_expired(*, chunk: int = CHUNK, max_chunks: int = MAX_CHUNKS) -> dict[str, int]:
    """One run of ``eventbus.purge_expired``: every table it owns, bounded; returns the rows deleted per table."""
    deleted: dict[str, int] = {}
    for entry in entries():
        if entry.purged_by != PURGE_TASK or entry.keep_for() is None:
            continue
        deleted[entry.table] = purge(entry, chunk=chunk, max_chunks=max_chunks)
        if deleted[entry.table]:
            log.info("retention: deleted %d rows of %s", deleted[entry.table], entry.table)
    return deleted


# --- What manage.py retention shows ------------------------------------------


@dataclass(frozen=True)
class TableState:
    table: str
    rows: int
    oldest: datetime | None
    expired: int
    """Rows past their retention that may go: what the next runs will delete."""
    keep_for: timedelta | None
    setting: str | None
    purged_by: str
    why: str


def states() -> list[TableState]:
    """Every registered table's row count, oldest row and retention.

    Counts every table in full: meant for a command run by hand, not for a
    page or a scrape.
    """
    found = []
    for entry in entries():
        manager = entry.model._default_manager
        oldest = manager.aggregate(oldest=Min(entry.age_field))["oldest"] if entry.age_field else None
        found.append(
            TableState(
                table=entry.table,
                rows=manager.count(),
                oldest=oldest,
                expired=entry.expired().count(),
                keep_for=entry.keep_for(),
                setting=entry.setting,
                purged_by=entry.purged_by if entry.keep_for() is not None else "",
                why=entry.why,
            )
        )
    return found
