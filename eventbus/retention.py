"""Retention: every table that grows has an age past which its rows go, deleted in bounded chunks.

Each table is one ``Retention`` entry in a registry: the age column, the
setting that says how long rows stay, which rows may go at all, and the task
that deletes them. The bus registers its own tables below; an app registers
its tables from its ``AppConfig.ready()`` (the bus imports no app). Beat runs
``eventbus.purge_expired`` (eventbus/tasks.py), which purges every entry it
owns; the few that another task purges (dead letters, raw readings, Celery's
result rows) are registered too, so that ``manage.py retention`` shows every
table with its row count, oldest row and retention.

Bounded work: a chunk is one short transaction (read ``chunk`` ids, delete
them), a table gets at most ``max_chunks`` chunks and ``MAX_SECONDS_PER_TABLE``
per run, and the next run goes on. No run holds a long transaction or a lock
that the request path or the workers would wait on.

**The invariant that keeps effects exactly once**: the ledger row of an
(event, subscriber) must outlive everything that can still deliver or replay
that event, or the delivery finds no row and takes effect a second time:

- an outbox row the relay or the reconciler still reads: pending and deferred
  rows are never purged, nor dispatched rows the reconciler has not settled,
  and a ledger row is purged only once its event's outbox row is gone;
- a dead letter that can be replayed: a ledger row is purged only once no dead
  letter of its event is left;
- a message the broker may still hold (a copy waiting out the visibility
  timeout, a retry countdown, a reconciler's copy): a ledger row is kept
  ``EVENTBUS_LEDGER_RETENTION_DAYS``, which the start check (``problems``)
  requires to exceed ``redelivery_window()``.

The first two are conditions on the purge itself rather than start checks
comparing retention settings: a row's age says nothing about a reconciler row
left unsettled for weeks, or a dead letter written long after the event was
handled, and a condition holds whatever the settings are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Exists, Min, OuterRef, Q, QuerySet
from django.utils import timezone
from django_celery_results.models import TaskResult

from eventbus import registry
from eventbus.models import (
    AggregateSequence,
    BrokerLoss,
    BrokerMarker,
    DeadLetter,
    DeadLetterReplay,
    DeliveryStep,
    OutboxEvent,
    ProcessedEvent,
)

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


# --- The start check ----------------------------------------------------------


def redelivery_window(visibility_timeout: float) -> timedelta:
    """The longest a copy of a delivery can still arrive after its effect was recorded in the ledger.

    A copy (a message whose acknowledgement was lost, a reconciler's copy of
    a slow delivery) lives at most as long as a delivery can: each of
    ``EVENTBUS_MAX_DELIVERIES`` starts held up to the visibility timeout,
    every retry of the slowest subscriber waited at its cap, an ordering gap
    waited out, plus ``EVENTBUS_REDELIVER_AFTER`` before the reconciler sends
    a copy at all. Waits for a rate-limit token or an open breaker are not
    counted (they can repeat); the ledger's retention is days where this is
    hours, which is the margin for them.
    """
    retries = max(
        (s.retry.max_retries * s.retry.max_delay for s in registry.all_subscriptions()),
        default=settings.EVENTBUS_RETRY_MAX_RETRIES * settings.EVENTBUS_RETRY_MAX_DELAY,
    )
    return timedelta(
        seconds=settings.EVENTBUS_MAX_DELIVERIES * visibility_timeout
        + retries
        + settings.EVENTBUS_ORDERING_GAP_TIMEOUT
        + settings.EVENTBUS_REDELIVER_AFTER
    )


def problems(visibility_timeout: float) -> list[str]:
    """Retention settings that would let a delivery or a reconciler run find no record of its own past."""
    found = []
    window = redelivery_window(visibility_timeout)
    ledger = timedelta(days=settings.EVENTBUS_LEDGER_RETENTION_DAYS)
    if ledger <= window:
        needed = int(window / timedelta(days=1)) + 1
        found.append(
            f"EVENTBUS_LEDGER_RETENTION_DAYS ({settings.EVENTBUS_LEDGER_RETENTION_DAYS}) is not longer than the "
            f"longest a copy of a delivery can still arrive ({window.total_seconds() / 3600:.1f} h: "
            "EVENTBUS_MAX_DELIVERIES x CELERY_VISIBILITY_TIMEOUT + every retry at its cap + "
            "EVENTBUS_ORDERING_GAP_TIMEOUT + EVENTBUS_REDELIVER_AFTER): a late copy would find no ledger row "
            f"and take effect twice. Set EVENTBUS_LEDGER_RETENTION_DAYS to at least {needed}, or shorten "
            "those settings"
        )
    timeline = timedelta(days=settings.EVENTBUS_TIMELINE_RETENTION_DAYS)
    if timeline.total_seconds() <= settings.EVENTBUS_REDELIVER_AFTER:
        found.append(
            f"EVENTBUS_TIMELINE_RETENTION_DAYS ({settings.EVENTBUS_TIMELINE_RETENTION_DAYS}) is not longer than "
            f"EVENTBUS_REDELIVER_AFTER ({settings.EVENTBUS_REDELIVER_AFTER:g}s): the reconciler reads a delivery's "
            "retries and waits from the timeline and would send again deliveries still under way. Raise it"
        )
    return found


# --- The bus's own tables -----------------------------------------------------


def _outbox_purgeable() -> Q:
    # Dispatched, and not among the rows the reconciler still reads (sent, not
    # settled): pending and deferred rows wait for the relay, unsettled ones
    # for the reconciler. A dispatched row sent to nobody is never settled.
    return Q(status=OutboxEvent.Status.DISPATCHED) & (Q(settled_at__isnull=False) | Q(last_sent_at__isnull=True))


def _ledger_purgeable() -> Q:
    # The invariant (module docstring): nothing left that could deliver or
    # replay the event, neither its outbox row nor a dead letter of it.
    outbox_row = OutboxEvent.objects.filter(pk=OuterRef("event_id"))
    dead_letter = DeadLetter.objects.filter(event_id=OuterRef("event_id"))
    return ~Exists(outbox_row) & ~Exists(dead_letter)


register(
    Retention(
        "eventbus.outbox",
        OutboxEvent,
        "created_at",
        "EVENTBUS_OUTBOX_RETENTION_DAYS",
        "dispatched and settled rows only; as long as TELEMETRY_RETENTION_DAYS, so that a telemetry "
        "batch's payload does not outlive its readings",
        only=_outbox_purgeable,
    )
)
register(
    Retention(
        "eventbus.ledger",
        ProcessedEvent,
        "processed_at",
        "EVENTBUS_LEDGER_RETENTION_DAYS",
        "only once the event's outbox row and dead letters are gone; days beyond the redelivery window (start check)",
        only=_ledger_purgeable,
    )
)
register(
    Retention(
        "eventbus.timeline",
        DeliveryStep,
        "at",
        "EVENTBUS_TIMELINE_RETENTION_DAYS",
        "as long as dead letters: the steps that explain a failure stay while it can be replayed",
    )
)
register(
    Retention(
        "eventbus.dead_letters",
        DeadLetter,
        "last_failed_at",
        "EVENTBUS_DEADLETTER_RETENTION_DAYS",
        "by last failure; long enough to notice a failure after a holiday and repair it",
        purged_by="eventbus.purge_dead_letters",
    )
)
register(
    Retention(
        "eventbus.dead_letter_replays",
        DeadLetterReplay,
        "replayed_at",
        None,
        "deleted with their dead letter",
    )
)


register(
    Retention(
        "celery.task_results",
        TaskResult,
        "date_done",
        "CELERY_RESULT_EXPIRES",
        "Celery's own expiry (celery.backend_cleanup, bounded in eventbus/results.py); the ledger, not "
        "this, records each delivery",
        unit=timedelta(seconds=1),
        purged_by="celery.backend_cleanup",
    )
)
register(
    Retention(
        "eventbus.sequences",
        AggregateSequence,
        None,
        None,
        "one row per aggregate (a user, a device): bounded by them. Never purged: a counter deleted "
        "would number a live aggregate from 1 again, behind its own ledger (stale) and outbox (unique)",
    )
)
register(Retention("eventbus.broker_marker", BrokerMarker, "written_at", None, "one row, rotated in place"))
register(
    Retention(
        "eventbus.broker_losses",
        BrokerLoss,
        "detected_at",
        None,
        "one row per broker data loss: bounded by incidents, each worth keeping",
    )
)
