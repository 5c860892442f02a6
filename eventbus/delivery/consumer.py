"""The base task of every subscriber: decode the envelope, and hand the delivery to the pipeline.

Retry, idempotency, rate limits, the circuit breaker, ordering and dead
letters live in the pipeline (eventbus/delivery/pipeline.py lists its steps),
never in business code: a subscriber's author writes the handler and the
decorator's arguments.

A poison message (a broken envelope, an unknown type or version) goes to the
dead-letter queue at once. An error around the handler (the ledger, Redis or
the database failing) is retried like a transient failure: Celery never acks
such a message as failed.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Reject, Retry
from django.conf import settings

from eventbus.celery_settings import broker_countdown
from eventbus.contract import registry
from eventbus.contract.envelope import Envelope
from eventbus.contract.errors import PoisonMessage
from eventbus.deadletters import Kind
from eventbus.delivery import outcomes, pipeline
from eventbus.delivery.guards import Delivery
from eventbus.observability import timeline
from eventbus.observability.context import reset_fields, set_fields

log = logging.getLogger(__name__)

# Scheduling a task again happens while its message is still held: a short
# wait for a broker that blinks, not the request path's fail-fast.
REPUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


class ConsumerTask(Task):
    """Delivered at least once; the handler's effect happens once per (event, subscriber)."""

    subscription_name: str = ""

    def consume(self, raw: Any) -> outcomes.Result:
        subscription = registry.get(self.subscription_name)
        try:
            event = Envelope.from_dict(raw)
        except PoisonMessage as exc:
            log.error("%s: poison message dead-lettered: %s", subscription.name, exc)
            return outcomes.dead_letter(self, subscription, raw, Kind.POISON, exc)

        delivery = Delivery(subscription, event, raw, self.request.id or "", int(self.request.retries or 0))
        bound = set_fields(
            correlation_id=event.correlation_id, event_id=event.id, event_type=event.type, subscriber=subscription.name
        )
        try:
            return pipeline.deliver(self, delivery)
        except (Retry, Reject):
            raise
        except Exception as exc:
            # Not the handler's failure (those are verdicts): the ledger, Redis
            # or the database failed around it. Never let Celery ack the
            # message as failed: retry it like a transient failure.
            log.warning("%s: event %s: %s: %s", subscription.name, event.id, type(exc).__name__, exc)
            return outcomes.failed(self, delivery, exc, transient=True)
        finally:
            reset_fields(bound)

    def run_again(self, countdown: float, *, retries: int, reason: str, exc: BaseException | None = None) -> NoReturn:
        """Publish this task again to run in ``countdown`` seconds, then end this delivery; raises.

        Celery's own ``Task.retry`` rejects the message for good when that
        publish fails (``Reject(requeue=False)``): with the broker half down,
        the retry and the message would both be gone. Here the publish is tried
        a few times, and if it still fails the message is put back instead
        (``Reject(requeue=True)``; if even that cannot reach the broker, the
        message stays unacknowledged and the broker redelivers it).
        """
        countdown = broker_countdown(countdown, settings.EVENTBUS_QUEUE_TYPE)
        signature = self.signature_from_request(self.request, countdown=countdown, retries=retries)
        try:
            signature.apply_async(retry=True, retry_policy=REPUBLISH_RETRY_POLICY)
        except Exception as publish_error:  # the broker's errors are many and transport-specific
            log.error(
                "%s: task %s could not be scheduled again (%s: %s); the message goes back to its queue",
                self.name,
                self.request.id,
                type(publish_error).__name__,
                publish_error,
            )
            raise Reject(publish_error, requeue=True) from publish_error
        raise Retry(message=reason, exc=exc, when=countdown, sig=signature)

    def note(self, event_id: object, subscriber: str, step: str, detail: str) -> None:
        """Write a step of this delivery on the event's timeline (eventbus/observability/timeline.py)."""
        timeline.note(event_id, subscriber, step, detail, self.request.id or "", self.request.hostname or "")
