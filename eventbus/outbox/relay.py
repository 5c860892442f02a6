"""The outbox relay: sends every event the on-commit dispatch could not, or had to defer.

Safe to run many at once, on any database: a relay claims rows by writing a
lease (its own token and a deadline) with a conditional UPDATE, so two relays
never send the same row in the same round, and a relay that dies releases its
rows when the lease ends. Sending twice is still possible in two narrow cases
(a relay dies after the broker took a message, before it marked the row; a
batch's flush fails after the broker took part of it, see
eventbus/fastpath/publishing_batch.py); the consumers' ledger makes that harmless.

A backlog goes out EVENTBUS_RELAY_BATCH rows per claim, their messages in
batches of eventbus.outbox.fanout.FLUSH_EVERY events, one Redis round trip each.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from eventbus.models import OutboxEvent
from eventbus.outbox.fanout import DispatchError, mark_dispatched, record_failure, send_many
from eventbus.protection import backpressure

log = logging.getLogger(__name__)

Status = OutboxEvent.Status


@dataclass
class RelayResult:
    dispatched: int = 0
    deferred: int = 0
    failed: int = 0
    error: str = ""


def waiting_count() -> int:
    """Events not yet handed to every subscriber's queue (pending or deferred)."""
    return OutboxEvent.objects.exclude(status=Status.DISPATCHED).count()


def _claim(owner: str, grace: float, batch: int, seen: set[str], ids: Collection[object] | None) -> list[OutboxEvent]:
    """Lease up to ``batch`` due rows to ``owner``; returns the rows this relay now holds.

    On PostgreSQL the candidates are locked with ``SELECT ... FOR UPDATE SKIP
    LOCKED``, so relays on many hosts claim disjoint rows without waiting on
    each other. Elsewhere (SQLite) the conditional UPDATE on the lease does
    the same job: whoever updates a free row first holds it.
    """
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    # A deferred row already had its on-commit chance: no grace for it.
    due = Q(status=Status.PENDING, created_at__lte=now - timedelta(seconds=grace)) | Q(status=Status.DEFERRED)
    lease_until = now + timedelta(seconds=settings.EVENTBUS_RELAY_LEASE)
    with transaction.atomic():
        candidates_qs = OutboxEvent.objects.filter(free, due).exclude(id__in=seen).order_by("created_at")
        if ids is not None:
            candidates_qs = candidates_qs.filter(id__in=ids)
        if connection.features.has_select_for_update_skip_locked:
            candidates_qs = candidates_qs.select_for_update(skip_locked=True)
        candidates = list(candidates_qs.values_list("id", flat=True)[:batch])
        if not candidates:
            return []
        OutboxEvent.objects.filter(free, id__in=candidates).exclude(status=Status.DISPATCHED).update(
            lease_owner=owner, lease_until=lease_until
        )
    return list(OutboxEvent.objects.filter(lease_owner=owner, id__in=candidates).order_by("created_at"))


def relay(
    *,
    grace: float | None = None,
    batch: int | None = None,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
    ids: Collection[object] | None = None,
) -> RelayResult:
    """Send waiting outbox rows (pending ones older than ``grace`` seconds, and deferred ones).

    Stops at the first broker failure (the rest waits for the next run) or
    after ``limit`` events. ``ids`` limits it to those rows (an operator's
    "send now"); rows already dispatched or leased by another relay are left.
    A deferred row whose queue is still full stays deferred and is not tried
    again in the same run.
    """
    grace = settings.EVENTBUS_RELAY_GRACE if grace is None else grace
    batch = batch or settings.EVENTBUS_RELAY_BATCH
    owner = uuid.uuid4().hex
    result = RelayResult()
    seen: set[str] = set()
    backpressure.forget_depths()
    while limit is None or result.dispatched + result.deferred < limit:
        size = batch if limit is None else min(batch, limit - result.dispatched - result.deferred)
        rows = _claim(owner, grace, size, seen, ids)
        if not rows:
            break
        only = {str(row.id): row.deferred_subscribers for row in rows if row.status == Status.DEFERRED}
        try:
            outcomes = send_many((row.to_wire() for row in rows), only=only)
        except DispatchError as exc:
            mark_dispatched(exc.done)
            handled = {o.event_id for o in exc.done}
            unsent = [str(row.id) for row in rows if str(row.id) not in handled]
            record_failure(unsent, exc.cause)
            result.dispatched += sum(1 for o in exc.done if not o.deferred)
            result.failed += len(unsent)
            result.error = str(exc)
            log.warning("relay stopped: broker failure after %d events: %s", result.dispatched, result.error)
            break
        mark_dispatched(outcomes)
        # A row deferred again is due again at once: not in this run. (Dispatched rows are due
        # never again, so ``seen`` stays small however long the backlog is.)
        seen.update(o.event_id for o in outcomes if o.deferred)
        sent = sum(1 for o in outcomes if not o.deferred)
        result.dispatched += sent
        result.deferred += len(outcomes) - sent
        if progress:
            progress(len(outcomes))
    if result.dispatched:
        log.info("relay dispatched %d waiting events", result.dispatched)
    return result
