"""The base task of every subscriber: decode, guard with the ledger, call the handler, retry.

Retry, idempotency and serialization live here, never in business code: a
subscriber's author writes the handler and the decorator's arguments.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Reject
from django.db import transaction

from eventbus import counters, ledger, registry
from eventbus.context import reset_correlation_id, set_correlation_id
from eventbus.envelope import Envelope
from eventbus.errors import PoisonMessage

log = logging.getLogger(__name__)


class ConsumerTask(Task):
    """Delivered at least once; the handler's effect happens once per (event, subscriber)."""

    subscription_name: str = ""
    # Results carry only a status word: the envelope is already stored in the
    # outbox and in the result's arguments.
    ignore_result = False

    def consume(self, raw: Any) -> dict[str, str]:
        subscription = registry.get(self.subscription_name)
        try:
            event = Envelope.from_dict(raw)
        except PoisonMessage as exc:
            log.error("%s: poison message rejected: %s", subscription.name, exc)
            # Never retried, never requeued: it could not succeed.
            raise Reject(str(exc), requeue=False) from exc

        token = set_correlation_id(event.correlation_id)
        try:
            return self._handle(subscription, event)
        finally:
            reset_correlation_id(token)

    def _handle(self, subscription: registry.Subscription, event: Envelope) -> dict[str, str]:
        task_id = self.request.id or ""
        try:
            with transaction.atomic():
                if not ledger.claim(event, subscription.name, task_id):
                    counters.incr(counters.DUPLICATES, subscription.name)
                    log.info("%s: event %s already processed; skipped", subscription.name, event.id)
                    return {"status": "duplicate", "event_id": str(event.id)}
                subscription.handler(event)
        except Exception as exc:
            if not subscription.retry.is_transient(exc):
                raise
            retries = self.request.retries
            countdown = subscription.retry.delay(retries)
            log.warning(
                "%s: event %s failed (%s: %s); retry %d/%d in %.1fs",
                subscription.name,
                event.id,
                type(exc).__name__,
                exc,
                retries + 1,
                subscription.retry.max_retries,
                countdown,
            )
            raise self.retry(exc=exc, countdown=countdown, max_retries=subscription.retry.max_retries) from exc
        log.info("%s: event %s %s", subscription.name, event.id, subscription.done_label)
        return {"status": "processed", "event_id": str(event.id)}
