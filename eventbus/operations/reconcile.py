"""The delivery reconciler: every delivery the broker took ends in the ledger or a dead letter, or is sent again.

The outbox records, for each event, which subscribers' messages the broker
took (``sent_to``) and when (``last_sent_at``). A delivery has ended when its
subscriber's ledger holds the event (processed, or shed under load) or a dead
letter holds it. A delivery sent more than ``EVENTBUS_REDELIVER_AFTER``
seconds ago with no end, and no sign of life since (a retry or a wait written
to its timeline), was lost by the broker: it is sent again to its
subscriber's queue, with a ``redelivered`` step on its timeline and a count in
/metrics. A delivery that was only slow (still queued behind a backlog) then
arrives twice; the ledger makes the second a counted no-op.

After a broker data loss (eventbus/operations/brokerwatch.py) the age does not matter:
every delivery sent before the loss that has no end is sent again at once.

Bounded work: rows are read oldest first, ``EVENTBUS_RECONCILE_BATCH`` at a
time, three indexed queries a batch (the rows, the ledger, the dead letters
and timeline heartbeats of their events), each batch in short statements of
its own; a run stops after ``MAX_SECONDS_PER_RUN`` and the next goes on. A row
whose deliveries have all ended is marked settled and never read again.

Safe to run several at once: a run leases the rows of a batch with the
relay's lease (a conditional UPDATE), and leaves the rows another run holds.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from eventbus.contract import registry
from eventbus.models import BrokerLoss, DeadLetter, DeliveryStep, OutboxEvent, ProcessedEvent
from eventbus.observability import counters, timeline
from eventbus.outbox.fanout import DispatchError, Outcome, mark_dispatched, send_many
from eventbus.protection import backpressure

log = logging.getLogger(__name__)

MAX_SECONDS_PER_RUN = 20.0
"""A run stops starting batches after this long: far below beat's interval times the rows a batch holds."""

#: Timeline steps a consumer writes while a delivery is still under way: a retry
#: scheduled, a wait (rate limit, breaker, ordering, a concurrent duplicate).
HEARTBEATS = (DeliveryStep.Step.RETRIED, DeliveryStep.Step.WAITING)

Status = OutboxEvent.Status


@dataclass(frozen=True)
class Missing:
    """Deliveries of one event that have no end."""

    event_id: str
    event_type: str
    subscribers: tuple[str, ...]
    last_sent_at: datetime


@dataclass
class ReconcileResult:
    scanned: int = 0
    """Outbox rows read."""
    settled: int = 0
    """Rows whose every delivery had ended, now marked settled."""
    redelivered: int = 0
    """Deliveries sent again (messages)."""
    missing: list[Missing] = field(default_factory=list)
    """What had no end: sent again, or, in a dry run, what would be."""
    complete: bool = False
    """The run got through everything that was due (not stopped by its time budget or the broker)."""
    error: str = ""
    seconds: float = 0.0
    cutoff: datetime | None = None

    def summary(self) -> str:
        events = len(self.missing)
        deliveries = sum(len(m.subscribers) for m in self.missing)
        text = (
            f"scanned {self.scanned} events in {self.seconds:.2f}s: {self.settled} settled, "
            f"{deliveries} deliveries of {events} events without an end"
        )
        if self.redelivered:
            text += f", {self.redelivered} sent again"
        if not self.complete:
            text += "; more is due (the next run goes on)" if not self.error else f"; stopped: {self.error}"
        return text


def open_loss() -> BrokerLoss | None:
    """The latest broker loss whose events the reconciler has not all checked yet (it covers earlier ones)."""
    return BrokerLoss.objects.filter(recovered_at__isnull=True).order_by("-detected_at").first()


def cutoff_for(redeliver_after: float | None = None) -> datetime:
    """Deliveries sent at or before this moment are due: ``redeliver_after`` seconds ago, or an open loss's time."""
    redeliver_after = settings.EVENTBUS_REDELIVER_AFTER if redeliver_after is None else redeliver_after
    cutoff = timezone.now() - timedelta(seconds=redeliver_after)
    loss = open_loss()
    return loss.detected_at if loss is not None and loss.detected_at > cutoff else cutoff


def due_count(cutoff: datetime) -> int:
    """Unsettled rows sent at or before ``cutoff`` (the reconciler's work, for a progress bar)."""
    return _unsettled(cutoff).count()


def reconcile(
    *,
    dry_run: bool = False,
    redeliver_after: float | None = None,
    batch: int | None = None,
    max_seconds: float | None = MAX_SECONDS_PER_RUN,
    progress: Callable[[int], None] | None = None,
) -> ReconcileResult:
    """Check the deliveries of sent events against the ledger; send again those without an end.

    ``dry_run`` reads and reports, and changes nothing. ``max_seconds=None``
    goes on until nothing is due.
    """
    batch = batch or settings.EVENTBUS_RECONCILE_BATCH
    started = time.monotonic()
    loss = open_loss()
    cutoff = cutoff_for(redeliver_after)
    result = ReconcileResult(cutoff=cutoff)
    owner = uuid.uuid4().hex
    after: tuple[datetime, uuid.UUID] | None = None
    backpressure.forget_depths()
    while max_seconds is None or time.monotonic() - started < max_seconds:
        rows = _due(cutoff, batch, after, leased_too=dry_run)
        if not rows:
            result.complete = True
            break
        after = (rows[-1]["last_sent_at"], rows[-1]["id"])
        result.scanned += len(rows)
        if not dry_run:
            rows = _lease(owner, [r["id"] for r in rows], cutoff)
        settled, missing = _examine(rows, cutoff)
        result.missing += missing
        if not dry_run:
            try:
                _settle(owner, settled)
                result.settled += len(settled)
                result.redelivered += _redeliver(owner, missing, _hold_back(loss))
            except DispatchError as exc:
                result.error = str(exc)
                log.warning("reconciler stopped: the broker failed: %s", exc)
                break
            finally:
                _release(owner, [r["id"] for r in rows])
        if progress:
            progress(len(rows))
    result.seconds = time.monotonic() - started
    if not dry_run and loss is not None and result.complete:
        BrokerLoss.objects.filter(pk=loss.pk).update(redelivered=F("redelivered") + result.redelivered)
        # Every loss found up to this one: what was sent before it has all been checked.
        BrokerLoss.objects.filter(recovered_at__isnull=True, detected_at__lte=loss.detected_at).update(
            recovered_at=timezone.now()
        )
        log.warning("broker loss of %s: every event sent before it is checked (%s)", loss.detected_at, result.summary())
    elif not dry_run and loss is not None:
        BrokerLoss.objects.filter(pk=loss.pk).update(redelivered=F("redelivered") + result.redelivered)
    if result.redelivered:
        log.warning("reconciler: %s", result.summary())
    return result


_FIELDS = ("id", "type", "status", "sent_to", "last_sent_at")


def _unsettled(cutoff: datetime) -> QuerySet[OutboxEvent]:
    return OutboxEvent.objects.filter(settled_at__isnull=True, last_sent_at__isnull=False, last_sent_at__lte=cutoff)


def _due(cutoff: datetime, batch: int, after: tuple[datetime, uuid.UUID] | None, *, leased_too: bool) -> list[dict]:
    """The next ``batch`` unsettled rows sent at or before ``cutoff``, oldest first, after ``after``."""
    rows = _unsettled(cutoff)
    if after is not None:
        rows = rows.filter(Q(last_sent_at__gt=after[0]) | Q(last_sent_at=after[0], id__gt=after[1]))
    if not leased_too:
        rows = rows.filter(Q(lease_until__isnull=True) | Q(lease_until__lt=timezone.now()))
    return list(rows.order_by("last_sent_at", "id").values(*_FIELDS)[:batch])


def _lease(owner: str, ids: list[uuid.UUID], cutoff: datetime) -> list[dict]:
    """Lease the rows no one else holds; returns those this run now holds, read again after the lease.

    Read again: another run may have settled or sent a row again between our
    read and our lease, and its old state must not be acted on.
    """
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    until = now + timedelta(seconds=settings.EVENTBUS_RELAY_LEASE)
    OutboxEvent.objects.filter(free, id__in=ids).update(lease_owner=owner, lease_until=until)
    held = _unsettled(cutoff).filter(id__in=ids, lease_owner=owner)
    return list(held.order_by("last_sent_at", "id").values(*_FIELDS))


def _release(owner: str, ids: list[uuid.UUID]) -> None:
    OutboxEvent.objects.filter(id__in=ids, lease_owner=owner).update(lease_owner="", lease_until=None)


def _examine(rows: list[dict], cutoff: datetime) -> tuple[list[uuid.UUID], list[Missing]]:
    """Which rows are settled (every delivery ended), and which deliveries are missing."""
    ids = [r["id"] for r in rows]
    ended = set(ProcessedEvent.objects.filter(event_id__in=ids).values_list("event_id", "subscriber"))
    ended |= set(DeadLetter.objects.filter(event_id__in=ids).values_list("event_id", "subscriber"))
    alive = set(
        DeliveryStep.objects.filter(event_id__in=ids, step__in=HEARTBEATS, at__gt=cutoff).values_list(
            "event_id", "subscriber"
        )
    )
    settled: list[uuid.UUID] = []
    missing: list[Missing] = []
    for row in rows:
        outstanding = []
        for name in row["sent_to"] or []:
            if (row["id"], name) in ended:
                continue
            if registry.find(name) is None:
                # A subscriber removed since: nobody is left to deliver to.
                log.warning("event %s was sent to %s, which no longer exists; not redelivered", row["id"], name)
                continue
            outstanding.append(name)
        if not outstanding:
            # A deferred row still owes its deferred subscribers their first message: not settled yet.
            if row["status"] == Status.DISPATCHED:
                settled.append(row["id"])
            continue
        due = tuple(name for name in outstanding if (row["id"], name) not in alive)
        if due:
            missing.append(Missing(str(row["id"]), row["type"], due, row["last_sent_at"]))
    return settled, missing


def _settle(owner: str, ids: list[uuid.UUID]) -> None:
    if ids:
        OutboxEvent.objects.filter(id__in=ids, lease_owner=owner).update(
            settled_at=timezone.now(), lease_owner="", lease_until=None
        )


def _hold_back(loss: BrokerLoss | None) -> float | None:
    """Seconds a redelivery waits after a broker loss, so that it never runs beside the delivery it repeats.

    A task that was running when Redis lost its data lost its effect lock with
    it (eventbus/delivery/guards/effectlock.py), and has not written its ledger entry yet: a
    copy sent at once could send the same email beside it. Every such task
    has ended, one way or the other, once the longest time limit has passed
    since the loss was detected; the copies run after that.
    """
    if loss is None:
        return None
    limits = [s.time_limit or settings.EVENTBUS_TIME_LIMIT for s in registry.all_subscriptions()]
    longest = max(limits, default=settings.EVENTBUS_TIME_LIMIT)
    left = (loss.detected_at + timedelta(seconds=longest) - timezone.now()).total_seconds()
    return left if left > 0 else None


def _redeliver(owner: str, missing: list[Missing], countdown: float | None) -> int:
    """Send each missing delivery again; returns how many messages the broker took."""
    if not missing:
        return 0
    only = {m.event_id: list(m.subscribers) for m in missing}
    rows = OutboxEvent.objects.filter(id__in=list(only), lease_owner=owner).order_by("last_sent_at")
    try:
        outcomes = send_many((row.to_wire() for row in rows), only=only, countdown=countdown)
    except DispatchError as exc:
        _record(exc.done)
        raise
    _record(outcomes)
    return sum(len(o.sent) for o in outcomes)


def _record(outcomes: list[Outcome]) -> None:
    mark_dispatched(outcomes)
    redelivered = [o for o in outcomes if o.sent]
    if not redelivered:
        return
    OutboxEvent.objects.filter(id__in=[o.event_id for o in redelivered]).update(redeliveries=F("redeliveries") + 1)
    for outcome in redelivered:
        for name in outcome.sent:
            counters.incr(counters.REDELIVERED, name)
            timeline.note(outcome.event_id, name, timeline.Step.REDELIVERED, "no end in the ledger; sent again")
        log.info("event %s sent again to %s: no end in the ledger", outcome.event_id, ", ".join(outcome.sent))
