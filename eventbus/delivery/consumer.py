"""The base task of every subscriber: decode, guard, call the handler, retry or dead-letter.

Retry, idempotency, rate limits, the circuit breaker, ordering and dead
letters live here, never in business code: a subscriber's author writes the
handler and the decorator's arguments.

What happens to one delivery, in order:

1. The envelope is decoded; a poison message (broken envelope, unknown type or
   version) goes to the dead-letter queue at once.
2. A delivery that keeps killing its worker is dead-lettered after
   ``EVENTBUS_MAX_DELIVERIES`` starts.
3. An event the ledger says is done is skipped and counted (a duplicate).
4. An ordered subscriber ignores a stale event and defers one with a gap.
5. An open circuit breaker or an empty token bucket reschedules the task for
   when it may go ahead; waiting uses up no retry.
6. The handler runs in a transaction with the ledger entry: its database
   effects and the "done" mark commit together. A handler whose effect is
   outside the database (``transactional=False``: an email) runs outside any
   transaction, under a short lock against concurrent duplicates, and the
   entry is written right after it (eventbus/delivery/effectlock.py).
7. A transient failure is retried with backoff; the last one, or a permanent
   failure, goes to the dead-letter queue with its traceback.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction

from eventbus.contract import registry
from eventbus.contract.envelope import Envelope
from eventbus.contract.errors import PoisonMessage
from eventbus.deadletters import DeadLetterFailure, Kind, send_to_dead_letter
from eventbus.deadletters.capture import DeadLetterNotCaptured
from eventbus.delivery import attempts as deliveries
from eventbus.delivery import effectlock, ledger, ordering
from eventbus.fastpath import bookkeeping
from eventbus.observability import counters, timeline
from eventbus.observability.context import reset_fields, set_fields
from eventbus.protection.breaker import CircuitBreaker

log = logging.getLogger(__name__)

Result = dict[str, str]

# Scheduling a task again happens while its message is still held: a short
# wait for a broker that blinks, not the request path's fail-fast.
REPUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}


class LedgerNotWritten(Exception):
    """A handler outside the database did its effect, and its ledger entry could not be written.

    Retried like a transient failure: the effect happens again (at least
    once), which its idempotency key makes harmless.
    """


class ConsumerTask(Task):
    """Delivered at least once; the handler's effect happens once per (event, subscriber)."""

    subscription_name: str = ""

    # --- entry point ------------------------------------------------------

    def consume(self, raw: Any) -> Result:
        subscription = registry.get(self.subscription_name)
        try:
            event = Envelope.from_dict(raw)
        except PoisonMessage as exc:
            log.error("%s: poison message dead-lettered: %s", subscription.name, exc)
            return self._dead_letter(subscription, raw, Kind.POISON, exc)

        bound = set_fields(
            correlation_id=event.correlation_id, event_id=event.id, event_type=event.type, subscriber=subscription.name
        )
        try:
            return self._deliver(subscription, event, raw)
        except (Retry, Reject):
            raise
        except Exception as exc:
            # Not the handler's failure (those are handled inside): the ledger,
            # Redis or the database failed around it. Never let Celery ack the
            # message as failed: retry it like a transient failure.
            log.warning("%s: event %s: %s: %s", subscription.name, event.id, type(exc).__name__, exc)
            return self._failed(subscription, event, raw, exc, transient=True)
        finally:
            reset_fields(bound)

    # --- the steps --------------------------------------------------------

    def _deliver(self, subscription: registry.Subscription, event: Envelope, raw: Any) -> Result:
        task_id = self.request.id or ""
        retries = int(self.request.retries or 0)
        # A handler whose effect is outside the database runs under the effect
        # lock, taken in the same round trip as the start is counted
        # (eventbus/fastpath/bookkeeping.py); the ledger is asked once, under it.
        lock = None if subscription.transactional else (subscription.name, event.id, subscription.time_limit or 60.0)
        limiter = subscription.limiter() if subscription.limiter is not None else None
        breaker = subscription.breaker() if subscription.breaker is not None else None
        begun = bookkeeping.begin(task_id, retries, lock, limiter=limiter, breaker=breaker)
        token = begun.token
        if begun.starts > settings.EVENTBUS_MAX_DELIVERIES:
            self._release(subscription, event, token)
            lost = RuntimeError(
                f"delivered {settings.EVENTBUS_MAX_DELIVERIES} times without finishing: "
                "the worker process died each time"
            )
            log.error("%s: event %s dead-lettered: %s", subscription.name, event.id, lost)
            return self._dead_letter(subscription, raw, Kind.WORKER_LOST, lost)
        if lock is not None and token is None:
            counters.incr(counters.EFFECT_WAITS, subscription.name)
            self._reschedule(event, 1.0, "another delivery of this event is under way")

        try:
            early = self._before_effect(subscription, event, raw, begun.admission, limiter, breaker)
        except BaseException:
            self._release(subscription, event, token)
            raise
        if early is not None:
            self._release(subscription, event, token)
            return early

        started = time.monotonic()
        try:
            if token is None:
                with transaction.atomic():
                    entry = ledger.claim(event, subscription.name, task_id, self.request.hostname or "")
                    if entry is None:
                        return self._duplicate(subscription, event)
                    subscription.call_handler(event)
                    ledger.finish(entry, (time.monotonic() - started) * 1000)
            elif not self._outside_transaction(subscription, event, started):
                self._release(subscription, event, token)
                return self._duplicate(subscription, event)
        except Exception as exc:
            self._release(subscription, event, token)
            infrastructure = (SoftTimeLimitExceeded, LedgerNotWritten)
            transient = isinstance(exc, infrastructure) or subscription.retry.is_transient(exc)
            if breaker is not None and transient:
                breaker.record_failure()
            return self._failed(subscription, event, raw, exc, transient=transient)
        bookkeeping.finish(
            task_id,
            retries,
            subscription.name,
            (datetime.now(UTC) - event.occurred_at).total_seconds(),
            lock=(event.id, token) if token is not None else None,
            breaker=breaker,
        )
        log.info("%s: event %s %s", subscription.name, event.id, subscription.done_label)
        return {"status": "processed", "event_id": str(event.id)}

    def _before_effect(
        self,
        subscription: registry.Subscription,
        event: Envelope,
        raw: Any,
        admission: bookkeeping.Admission,
        limiter: registry.Limiter | None,
        breaker: CircuitBreaker | None,
    ) -> Result | None:
        """The checks before the handler; returns an outcome that ends the delivery here, or None.

        Raises Retry when the delivery must wait (a gap, a rate limit, an open breaker).
        """
        if ledger.has_processed(event.id, subscription.name):
            return self._duplicate(subscription, event)

        if subscription.ordered:
            order = ordering.check(event, subscription)
            if order is ordering.Order.STALE:
                counters.incr(counters.STALE, subscription.name)
                self._note(
                    event.id, subscription.name, timeline.Step.STALE, "a later event of the aggregate was applied"
                )
                log.info("%s: event %s is stale (a later one was applied); ignored", subscription.name, event.id)
                self._ended()
                return {"status": "stale", "event_id": str(event.id)}
            if order is ordering.Order.GAP:
                return self._wait_for_predecessor(subscription, event, raw)

        # The token first (taken by begin, with a look at the breaker): a
        # probe that then waited for a token would hold the breaker's probe
        # slot for nothing.
        if limiter is not None and admission.token_wait > 0:
            counters.incr(counters.RATE_LIMIT_WAITS, subscription.name)
            # Many tasks wait for the same moment; spread them so that
            # they do not all come back for the one free grant at once.
            self._reschedule(event, admission.token_wait * random.uniform(1.0, 2.0), f"rate limit {limiter.name}")

        if breaker is not None and not admission.breaker_closed:
            # Open or half-open: its own check decides, and may make this delivery the probe.
            wait = breaker.before_call()
            if wait is not None:
                counters.incr(counters.BREAKER_WAITS, subscription.name)
                self._reschedule(event, wait, f"circuit breaker {breaker.name} is open")
        return None

    def _outside_transaction(self, subscription: registry.Subscription, event: Envelope, started: float) -> bool:
        """Run a handler whose effect is outside the database; False when another delivery already did it.

        The handler runs outside any transaction (it holds no database lock
        while it talks to its provider), under a lock in Redis that keeps a
        concurrent duplicate out (taken by the caller, who asked the ledger
        under it); then the ledger entry is written, in one INSERT. A worker
        that dies between the effect and the entry leaves the effect to
        happen again on redelivery: at least once, which is why such
        handlers carry an idempotency key (the email's Message-ID).
        """
        subscription.call_handler(event)
        try:
            return ledger.record(
                event,
                subscription.name,
                self.request.id or "",
                self.request.hostname or "",
                (time.monotonic() - started) * 1000,
            )
        except Exception as exc:
            raise LedgerNotWritten(f"the effect happened, its ledger entry was not written: {exc}") from exc

    def _release(self, subscription: registry.Subscription, event: Envelope, token: str | None) -> None:
        if token is not None:
            effectlock.release(subscription.name, event.id, token)

    def _ended(self) -> None:
        """This attempt ended in an orderly way without an effect (a duplicate, a stale event)."""
        deliveries.ended(self.request.id or "", int(self.request.retries or 0))

    def _duplicate(self, subscription: registry.Subscription, event: Envelope) -> Result:
        self._ended()
        counters.incr(counters.DUPLICATES, subscription.name)
        self._note(event.id, subscription.name, timeline.Step.DUPLICATE, "the ledger says it is done")
        log.info("%s: event %s already processed; skipped", subscription.name, event.id)
        return {"status": "duplicate", "event_id": str(event.id)}

    def _wait_for_predecessor(self, subscription: registry.Subscription, event: Envelope, raw: Any) -> Result:
        waited = (datetime.now(UTC) - event.occurred_at).total_seconds()
        if waited > settings.EVENTBUS_ORDERING_GAP_TIMEOUT:
            gap = RuntimeError(
                f"an earlier event of {event.aggregate} was still not handled after {waited:.0f}s "
                f"(EVENTBUS_ORDERING_GAP_TIMEOUT={settings.EVENTBUS_ORDERING_GAP_TIMEOUT:g}s)"
            )
            return self._dead_letter(subscription, raw, Kind.PERMANENT, gap)
        counters.incr(counters.ORDER_WAITS, subscription.name)
        self._reschedule(
            event, settings.EVENTBUS_ORDERING_RECHECK, f"waiting for an earlier event of {event.aggregate}"
        )

    def _failed(
        self, subscription: registry.Subscription, event: Envelope, raw: Any, exc: Exception, *, transient: bool
    ) -> Result:
        task_id = self.request.id or ""
        retries = int(self.request.retries or 0)
        deliveries.failed(task_id)
        if transient and retries < subscription.retry.max_retries:
            countdown = subscription.retry.delay(retries)
            counters.incr(counters.RETRIES, subscription.name)
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
            self._note(
                event.id,
                subscription.name,
                timeline.Step.RETRIED,
                f"{type(exc).__name__}: {exc}; "
                f"retry {retries + 1}/{subscription.retry.max_retries} in {countdown:.1f}s",
            )
            deliveries.ended(task_id, retries)
            self._run_again(countdown, retries=retries + 1, reason=f"retry {retries + 1}", exc=exc)
        kind = Kind.RETRIES_EXHAUSTED if transient else Kind.PERMANENT
        log.error(
            "%s: event %s dead-lettered after %d attempts (%s): %s: %s",
            subscription.name,
            event.id,
            retries + 1,
            kind.value,
            type(exc).__name__,
            exc,
        )
        return self._dead_letter(subscription, raw, kind, exc)

    # --- outcomes that end the message ------------------------------------

    def _dead_letter(self, subscription: registry.Subscription, raw: Any, kind: Kind, exc: BaseException) -> Result:
        task_id = self.request.id or ""
        retries = int(self.request.retries or 0)
        queue = (self.request.delivery_info or {}).get("routing_key") or subscription.queue
        failure = DeadLetterFailure.from_exception(
            kind,
            exc,
            queue=queue,
            body=raw,
            subscriber=subscription.name,
            task_name=self.name,
            task_id=task_id,
            attempts=retries + 1,
            first_failed_at=deliveries.first_failure(task_id) or datetime.now(UTC),
        )
        try:
            send_to_dead_letter(failure)
        except DeadLetterNotCaptured:
            # Neither the broker nor the database took it: try the whole
            # message again later rather than let it vanish.
            deliveries.ended(task_id, retries)
            self._run_again(settings.EVENTBUS_RETRY_MAX_DELAY, retries=retries, reason="dead letter not captured")
        counters.incr(counters.DEAD_LETTERED, subscription.name)
        event_id = failure.event_id
        if event_id is not None:
            self._note(event_id, subscription.name, timeline.Step.DEAD_LETTERED, f"{kind.value}: {failure.reason}")
        deliveries.ended(task_id, retries)
        deliveries.forget(task_id)
        return {"status": "dead_lettered", "kind": kind.value, "dead_letter_id": str(failure.id)}

    def _reschedule(self, event: Envelope, countdown: float, reason: str) -> NoReturn:
        """Run this task again in ``countdown`` seconds without using up a retry; raises Retry."""
        task_id = self.request.id or ""
        retries = int(self.request.retries or 0)
        log.info("%s: task %s waits %.2fs: %s", self.name, task_id, countdown, reason)
        self._note(event.id, self.subscription_name, timeline.Step.WAITING, f"{reason}; again in {countdown:.2f}s")
        deliveries.ended(task_id, retries)
        self._run_again(countdown, retries=retries, reason=reason)

    def _run_again(self, countdown: float, *, retries: int, reason: str, exc: BaseException | None = None) -> NoReturn:
        """Publish this task again to run in ``countdown`` seconds, then end this delivery; raises.

        Celery's own ``Task.retry`` rejects the message for good when that
        publish fails (``Reject(requeue=False)``): with the broker half down,
        the retry and the message would both be gone. Here the publish is tried
        a few times, and if it still fails the message is put back instead
        (``Reject(requeue=True)``; if even that cannot reach the broker, the
        message stays unacknowledged and the broker redelivers it).
        """
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

    def _note(self, event_id: object, subscriber: str, step: str, detail: str) -> None:
        timeline.note(event_id, subscriber, step, detail, self.request.id or "", self.request.hostname or "")
