"""One snapshot of the asynchronous flow: the ops overview page, its JSON and ``manage.py eventbus_status``.

``take_snapshot()`` reads each source once into a ``Snapshot`` (ops/snapshot.py) and never raises. A source that
fails (the broker or Redis down, a database error) leaves its part empty
(``None``) and its reason in ``Snapshot.unavailable`` as ``"unavailable:
<reason>"``; every other part is still read. Each read is bounded: a queue's
depth is one LLEN (or a passive declare on AMQP), workers are asked with a
timeout, the database reads are aggregates over indexed columns, and
throughput covers the last ``THROUGHPUT_MINUTES`` minutes.

The readers are public: ``/metrics`` (ops/metrics.py) calls the ones it needs,
without the workers' round trip. What the bus keeps in Redis (counters,
breakers, limiters), its subscriptions and its queues' marks come through
``eventbus.ops_api``; the database parts are queries on ``eventbus.models``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.db.models import Count, Min, Q
from django.db.models.functions import TruncMinute
from django.utils import timezone

from eventbus import ops_api
from eventbus.models import BrokerLoss, DeadLetter, OutboxEvent, ProcessedEvent
from eventbus.ops_api import COUNTER_NAMES
from ops.snapshot import (
    MinuteCount,
    OutboxStatus,
    QueueStatus,
    ReconcileStatus,
    Snapshot,
    SubscriberStatus,
)
from project import queues
from project.celery import app as celery_app

log = logging.getLogger(__name__)

T = TypeVar("T")

WORKERS_TIMEOUT = 1.0
"""Seconds to wait for workers to say which queues they consume; an inspect always waits this long."""
THROUGHPUT_MINUTES = 10
"""Minutes of published and processed events shown, the current (partial) one included."""
NO_SUBSCRIBER = "(unknown)"
"""The subscriber of a dead letter that names none (a poison message no task could read)."""

_WAITING = (OutboxEvent.Status.PENDING, OutboxEvent.Status.DEFERRED)


def describe_failure(exc: BaseException) -> str:
    """One line: the exception's type and message."""
    text = " ".join(str(exc).split()) or "no message"
    return f"unavailable: {type(exc).__name__}: {text}"


def attempt(part: str, reader: Callable[[], T], unavailable: dict[str, str]) -> T | None:
    """``reader()``, or None with the reason stored under ``part`` in ``unavailable``."""
    try:
        return reader()
    except Exception as exc:  # a status page shows a failing source; it must not fail with it
        unavailable[part] = describe_failure(exc)
        log.warning("status: %s %s", part, unavailable[part])
        return None


# --- readers ------------------------------------------------------------------


def queue_depths() -> dict[str, int]:
    """Messages waiting in each queue of WORKER_QUEUES, read from the broker now (no cache)."""
    with celery_app.connection_for_read() as connection:
        channel = connection.default_channel
        return {name: ops_api.queue_depth(channel, name) for name in queues.WORKER_QUEUES}


def workers_by_queue(timeout: float = WORKERS_TIMEOUT) -> dict[str, tuple[str, ...]]:
    """Worker nodes consuming each queue of WORKER_QUEUES, as they answer within ``timeout`` seconds."""
    replies = celery_app.control.inspect(timeout=timeout).active_queues() or {}
    nodes: dict[str, set[str]] = {name: set() for name in queues.WORKER_QUEUES}
    for node, consumed in replies.items():
        for queue in consumed or ():
            if queue.get("name") in nodes:
                nodes[queue["name"]].add(node)
    return {name: tuple(sorted(found)) for name, found in nodes.items()}


def worker_health(snapshot: Snapshot) -> list[ops_api.WorkerHealth]:
    """Each worker seen lately, stalled or not (eventbus/observability/stalls.py), judged on the snapshot's
    queue depths: one more Redis round trip (its bound: the bus's client's 5 s), and the broker asked only
    for a queue the snapshot has no depth of."""
    depths = {q.name: q.depth for q in snapshot.queues if q.depth is not None}
    return ops_api.worker_health(depths=depths)


def outbox_status(now: datetime | None = None) -> OutboxStatus:
    """Pending and deferred events and the oldest of them (one query on the (status, created_at) index)."""
    now = now or timezone.now()
    rows = (
        OutboxEvent.objects.filter(status__in=_WAITING)
        .order_by()
        .values("status")
        .annotate(count=Count("id"), oldest=Min("created_at"))
    )
    by_status = {row["status"]: row for row in rows}
    oldest = min((row["oldest"] for row in by_status.values()), default=None)
    return OutboxStatus(
        pending=by_status.get(OutboxEvent.Status.PENDING, {}).get("count", 0),
        deferred=by_status.get(OutboxEvent.Status.DEFERRED, {}).get("count", 0),
        oldest_created_at=oldest,
        oldest_age_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else None,
    )


def reconcile_status(now: datetime | None = None) -> ReconcileStatus:
    """Counted on the outbox's partial index of unsettled rows; the last BrokerLoss row."""
    now = now or timezone.now()
    unsettled = OutboxEvent.objects.filter(settled_at__isnull=True, last_sent_at__isnull=False)
    overdue_before = now - timedelta(seconds=settings.EVENTBUS_REDELIVER_AFTER)
    counts = unsettled.aggregate(total=Count("id"), overdue=Count("id", filter=Q(last_sent_at__lte=overdue_before)))
    last = BrokerLoss.objects.order_by("-detected_at").first()
    return ReconcileStatus(
        unsettled=counts["total"],
        overdue=counts["overdue"],
        broker_losses=BrokerLoss.objects.count(),
        last_loss_at=last.detected_at if last else None,
        last_loss_recovered_at=last.recovered_at if last else None,
        last_loss_redelivered=last.redelivered if last else 0,
    )


def dead_letters_by_subscriber() -> dict[str, int]:
    """Dead letters stored per subscriber; those that name none under NO_SUBSCRIBER."""
    rows = DeadLetter.objects.order_by().values("subscriber").annotate(count=Count("id"))
    totals: dict[str, int] = {}
    for row in rows:
        name = row["subscriber"] or NO_SUBSCRIBER
        totals[name] = totals.get(name, 0) + row["count"]
    return totals


def _per_minute(rows: Iterable[tuple[datetime, int]]) -> dict[datetime, int]:
    return {minute.astimezone(UTC): count for minute, count in rows}


def throughput(minutes: int = THROUGHPUT_MINUTES, now: datetime | None = None) -> tuple[MinuteCount, ...]:
    """Events published and processed in each of the last ``minutes`` minutes, oldest first.

    Counted in the database, grouped by minute: two queries of at most
    ``minutes`` rows each, over indexed time columns.
    """
    now = (now or timezone.now()).astimezone(UTC)
    current = now.replace(second=0, microsecond=0)
    since = current - timedelta(minutes=minutes - 1)
    published = _per_minute(
        OutboxEvent.objects.filter(
            # Every status named, so that the (status, created_at) index serves the time range.
            status__in=OutboxEvent.Status.values,
            created_at__gte=since,
        )
        .annotate(minute=TruncMinute("created_at"))
        .order_by()
        .values_list("minute")
        .annotate(count=Count("id"))
        .values_list("minute", "count")
    )
    processed = _per_minute(
        ProcessedEvent.objects.filter(processed_at__gte=since, outcome=ProcessedEvent.Outcome.PROCESSED)
        .annotate(minute=TruncMinute("processed_at"))
        .order_by()
        .values_list("minute")
        .annotate(count=Count("id"))
        .values_list("minute", "count")
    )
    result = []
    for offset in range(minutes - 1, -1, -1):
        minute = current - timedelta(minutes=offset)
        seconds = 60.0 if offset else max(1.0, (now - current).total_seconds())
        out, done = published.get(minute, 0), processed.get(minute, 0)
        result.append(MinuteCount(minute, seconds, out, done, out / seconds, done / seconds))
    return tuple(result)


# --- the snapshot -------------------------------------------------------------


def take_snapshot(*, workers_timeout: float = WORKERS_TIMEOUT) -> Snapshot:
    """Read every source once; a failing one is named in ``unavailable`` and the rest still read.

    Takes about ``workers_timeout`` seconds: asking the workers waits that long
    for their answers (without a broker it fails at once).
    """
    unavailable: dict[str, str] = {}
    now = timezone.now()
    depths = attempt("queues", queue_depths, unavailable)
    if depths is None:
        # Without a broker, asking the workers would only fail the same way.
        workers = None
        unavailable["workers"] = unavailable["queues"]
    else:
        workers = attempt("workers", lambda: workers_by_queue(workers_timeout), unavailable)
    queue_rows = tuple(
        QueueStatus(
            name=name,
            high_water_mark=ops_api.high_water_mark(name),
            depth=None if depths is None else depths.get(name),
            workers=None if workers is None else workers.get(name, ()),
        )
        for name in queues.WORKER_QUEUES
    )
    counted = attempt("counters", ops_api.counters_by_subscriber, unavailable)
    dead = attempt("dead_letters", dead_letters_by_subscriber, unavailable)
    return Snapshot(
        taken_at=now,
        queues=queue_rows,
        outbox=attempt("outbox", lambda: outbox_status(now), unavailable),
        reconcile=attempt("reconcile", lambda: reconcile_status(now), unavailable),
        subscribers=_subscribers(counted, dead),
        breakers=attempt("breakers", ops_api.breaker_states, unavailable),
        limiters=attempt("limiters", ops_api.limiter_states, unavailable),
        throughput=attempt("throughput", lambda: throughput(now=now), unavailable),
        unavailable=unavailable,
    )


def _subscribers(
    counted: dict[str, dict[str, int]] | None, dead: dict[str, int] | None
) -> tuple[SubscriberStatus, ...]:
    known = {s.name: s for s in ops_api.subscriptions()}
    names = set(known) | set(counted or ()) | set(dead or ())
    rows = []
    for name in sorted(names):
        subscription = known.get(name)
        rows.append(
            SubscriberStatus(
                name=name,
                queue=subscription.queue if subscription else "",
                critical=subscription.critical if subscription else False,
                counters=None if counted is None else counted.get(name, dict.fromkeys(COUNTER_NAMES, 0)),
                dead_letters=None if dead is None else dead.get(name, 0),
            )
        )
    return tuple(rows)


def age(seconds: float | None) -> str:
    """``3s``, ``4m 05s``, ``2h 03m``, ``5d 04h``; ``-`` for None."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"
