"""The outbox relay: sends every pending event the on-commit dispatch could not.

Safe to run many at once, on any database: a relay claims rows by writing a
lease (its own token and a deadline) with a conditional UPDATE, so two relays
never send the same row in the same round, and a relay that dies releases its
rows when the lease ends. Sending twice is still possible in one narrow case
(a relay dies after the broker took a message, before it marked the row);
the consumers' ledger makes that harmless.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from eventbus.dispatch import DispatchError, mark_dispatched, record_failure, send_many
from eventbus.models import OutboxEvent

log = logging.getLogger(__name__)


@dataclass
class RelayResult:
    dispatched: int = 0
    failed: int = 0
    error: str = ""


def pending_count() -> int:
    return OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).count()


def _claim(owner: str, grace: float, batch: int) -> list[OutboxEvent]:
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    candidates = list(
        OutboxEvent.objects.filter(
            free, status=OutboxEvent.Status.PENDING, created_at__lte=now - timedelta(seconds=grace)
        )
        .order_by("created_at")
        .values_list("id", flat=True)[:batch]
    )
    if not candidates:
        return []
    OutboxEvent.objects.filter(free, id__in=candidates, status=OutboxEvent.Status.PENDING).update(
        lease_owner=owner, lease_until=now + timedelta(seconds=settings.EVENTBUS_RELAY_LEASE)
    )
    return list(OutboxEvent.objects.filter(lease_owner=owner, id__in=candidates).order_by("created_at"))


def relay(
    *,
    grace: float | None = None,
    batch: int | None = None,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> RelayResult:
    """Send pending outbox rows older than ``grace`` seconds, ``batch`` at a time.

    Stops at the first broker failure (the rest waits for the next run) or
    after ``limit`` events.
    """
    grace = settings.EVENTBUS_RELAY_GRACE if grace is None else grace
    batch = batch or settings.EVENTBUS_RELAY_BATCH
    owner = uuid.uuid4().hex
    result = RelayResult()
    while limit is None or result.dispatched < limit:
        size = batch if limit is None else min(batch, limit - result.dispatched)
        rows = _claim(owner, grace, size)
        if not rows:
            break
        try:
            sent = send_many(row.to_wire() for row in rows)
        except DispatchError as exc:
            mark_dispatched(exc.sent)
            result.dispatched += len(exc.sent)
            unsent = [str(row.id) for row in rows if str(row.id) not in set(exc.sent)]
            record_failure(unsent, exc.cause)
            result.failed += len(unsent)
            result.error = str(exc)
            log.warning("relay stopped: broker failure after %d events: %s", result.dispatched, result.error)
            break
        mark_dispatched(sent)
        result.dispatched += len(sent)
        if progress:
            progress(len(sent))
    if result.dispatched:
        log.info("relay dispatched %d pending events", result.dispatched)
    return result
