"""The bus's own tables in the retention registry (operations/retention.py), and the rule that keeps effects once.

Registered from ``EventbusConfig.ready()``, as every app registers its tables.

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

from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django_celery_results.models import TaskResult

from eventbus.contract import registry
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
from eventbus.operations.retention import Retention, register

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
    # The invariant (this module's docstring): nothing left that could deliver or
    # replay the event, neither its outbox row nor a dead letter of it.
    outbox_row = OutboxEvent.objects.filter(pk=OuterRef("event_id"))
    dead_letter = DeadLetter.objects.filter(event_id=OuterRef("event_id"))
    return ~Exists(outbox_row) & ~Exists(dead_letter)


def register_bus_tables() -> None:
    """Name the bus's tables, with their conditions and reasons, to the retention registry."""
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
            "only once the event's outbox row and dead letters are gone; "
            "days beyond the redelivery window (start check)",
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
            "Celery's own expiry (celery.backend_cleanup, bounded in eventbus/fastpath/results.py); the ledger, not "
            "this, records each delivery",
            unit=timedelta(seconds=1),
            purged_by="celery.backend_cleanup",
        )
    )
    register(
        Retention(
            "eventbus.outbox.sequences",
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
