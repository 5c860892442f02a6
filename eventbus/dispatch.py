"""Handing an event to the broker: one message per subscriber, each on that subscriber's queue."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from celery import current_app
from django.db.models import F
from django.utils import timezone

from eventbus import registry
from eventbus.models import OutboxEvent

log = logging.getLogger(__name__)

Wire = Mapping[str, Any]


def send(wire: Wire, producer: Any) -> None:
    """Publish ``wire`` once per subscriber of its type (fan-out), without retrying.

    Raises on a broker failure: the caller decides whether to wait (the relay)
    or to leave the event to the relay (a request).
    """
    for subscription in registry.subscriptions_for(wire["type"]):
        subscription.task.apply_async(
            args=(wire,),
            queue=subscription.queue,
            routing_key=subscription.queue,
            producer=producer,
            # Fail fast: a request must not wait on a sick broker.
            retry=False,
        )


class DispatchError(Exception):
    """The broker failed part way; ``sent`` holds the ids of the events fully sent before that."""

    def __init__(self, sent: list[str], cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.sent = sent
        self.cause = cause


def send_many(wires: Iterable[Wire]) -> list[str]:
    """Send several events over one producer connection; returns their ids.

    Raises DispatchError, naming what was fully sent, at the first failure.
    """
    sent: list[str] = []
    try:
        with current_app.producer_or_acquire() as producer:
            for wire in wires:
                send(wire, producer)
                sent.append(str(wire["id"]))
    except Exception as exc:  # the broker's errors are many and transport-specific
        raise DispatchError(sent, exc) from exc
    return sent


def mark_dispatched(event_ids: list[str]) -> None:
    OutboxEvent.objects.filter(id__in=event_ids, status=OutboxEvent.Status.PENDING).update(
        status=OutboxEvent.Status.DISPATCHED,
        dispatched_at=timezone.now(),
        dispatch_attempts=F("dispatch_attempts") + 1,
        lease_owner="",
        lease_until=None,
    )


def record_failure(event_ids: list[str], error: BaseException) -> None:
    OutboxEvent.objects.filter(id__in=event_ids, status=OutboxEvent.Status.PENDING).update(
        dispatch_attempts=F("dispatch_attempts") + 1,
        last_error=f"{type(error).__name__}: {error}"[:2000],
        lease_owner="",
        lease_until=None,
    )


def dispatch_after_commit(wire: Wire) -> None:
    """Runs after the producer's commit. Never raises: a failure leaves the row to the relay."""
    event_id = str(wire["id"])
    try:
        send_many([wire])
    except DispatchError as exc:
        log.warning("event %s (%s) left pending for the relay: %s", event_id, wire["type"], exc)
        try:
            record_failure([event_id], exc.cause)
        except Exception:
            log.exception("could not record the dispatch failure of event %s", event_id)
        return
    mark_dispatched([event_id])
