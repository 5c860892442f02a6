"""Acting on a delivery's verdict (eventbus/delivery/verdict.py): the one place that does.

- ``GO`` (the effect happened): logged, reported processed;
- ``skip``: the attempt ends, counted, noted on the timeline;
- ``wait``: the task runs again in ``countdown`` seconds, counted, using up no retry;
- ``fail``: a transient failure is retried with the retry policy's backoff
  until its retries are used up; that last one, or a permanent failure, is
  dead-lettered with its traceback;
- ``dead_letter``: the message is set aside at once.

Every attempt ends in an orderly way here (eventbus/delivery/guards/attempts.py):
its start count is cleared, so that only a worker that died leaves one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from django.conf import settings

from eventbus.contract import registry
from eventbus.deadletters import DeadLetterFailure, Kind, send_to_dead_letter
from eventbus.deadletters.capture import DeadLetterNotCaptured
from eventbus.delivery.guards import attempts
from eventbus.delivery.verdict import Action, Verdict
from eventbus.observability import counters, timeline

if TYPE_CHECKING:
    from eventbus.delivery.consumer import ConsumerTask
    from eventbus.delivery.guards import Delivery

# A delivery's lines keep the consumer's logger, as before the pipeline had
# modules of its own: log filters and tests/observability/test_correlation.py select on it.
log = logging.getLogger("eventbus.delivery.consumer")

Result = dict[str, str]


def act(task: ConsumerTask, delivery: Delivery, verdict: Verdict) -> Result:
    """End the delivery as ``verdict`` says; raises Retry (or Reject) when it runs again."""
    subscription, event = delivery.subscription, delivery.event
    if verdict.action is Action.GO:
        log.info("%s: event %s %s", subscription.name, event.id, subscription.done_label)
        return {"status": "processed", "event_id": str(event.id)}
    if verdict.action is Action.SKIP:
        attempts.ended(delivery.task_id, delivery.retries)
        counters.incr(verdict.counter, subscription.name)
        task.note(event.id, subscription.name, verdict.status, verdict.reason)
        log.info("%s: event %s %s", subscription.name, event.id, verdict.message)
        return {"status": verdict.status, "event_id": str(event.id)}
    if verdict.action is Action.WAIT:
        counters.incr(verdict.counter, subscription.name)
        reschedule(task, event.id, verdict.countdown, verdict.reason)
    if verdict.action is Action.FAIL and verdict.error is not None:
        return failed(task, delivery, verdict.error, transient=verdict.transient)
    if verdict.action is Action.DEAD_LETTER and verdict.error is not None and verdict.kind is not None:
        log.error("%s: event %s dead-lettered: %s", subscription.name, event.id, verdict.error)
        return dead_letter(task, subscription, delivery.raw, verdict.kind, verdict.error)
    raise ValueError(f"a single delivery cannot end as {verdict!r}")


def failed(task: ConsumerTask, delivery: Delivery, exc: BaseException, *, transient: bool) -> Result:
    """Retry a transient failure while the retry policy allows; dead-letter it after, or a permanent one."""
    subscription, event = delivery.subscription, delivery.event
    task_id, retries = delivery.task_id, delivery.retries
    policy = subscription.retry
    attempts.failed(task_id)
    if transient and retries < policy.max_retries:
        countdown = policy.delay(retries)
        counters.incr(counters.RETRIES, subscription.name)
        what = f"{type(exc).__name__}: {exc}"
        log.warning(
            "%s: event %s failed (%s); retry %d/%d in %.1fs",
            subscription.name,
            event.id,
            what,
            retries + 1,
            policy.max_retries,
            countdown,
        )
        detail = f"{what}; retry {retries + 1}/{policy.max_retries} in {countdown:.1f}s"
        task.note(event.id, subscription.name, timeline.Step.RETRIED, detail)
        attempts.ended(task_id, retries)
        task.run_again(countdown, retries=retries + 1, reason=f"retry {retries + 1}", exc=exc)
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
    return dead_letter(task, subscription, delivery.raw, kind, exc)


def dead_letter(
    task: ConsumerTask, subscription: registry.Subscription, raw: Any, kind: Kind, exc: BaseException
) -> Result:
    """Send the message to the dead-letter queue; when neither the broker nor the database takes it,
    run the whole message again later rather than let it vanish (raises Retry)."""
    request = task.request
    task_id = request.id or ""
    retries = int(request.retries or 0)
    failure = DeadLetterFailure.from_exception(
        kind,
        exc,
        queue=(request.delivery_info or {}).get("routing_key") or subscription.queue,
        body=raw,
        subscriber=subscription.name,
        task_name=task.name,
        task_id=task_id,
        attempts=retries + 1,
        first_failed_at=attempts.first_failure(task_id) or datetime.now(UTC),
    )
    try:
        send_to_dead_letter(failure)
    except DeadLetterNotCaptured:
        attempts.ended(task_id, retries)
        task.run_again(settings.EVENTBUS_RETRY_MAX_DELAY, retries=retries, reason="dead letter not captured")
    counters.incr(counters.DEAD_LETTERED, subscription.name)
    if failure.event_id is not None:
        task.note(failure.event_id, subscription.name, timeline.Step.DEAD_LETTERED, f"{kind.value}: {failure.reason}")
    attempts.ended(task_id, retries)
    attempts.forget(task_id)
    return {"status": "dead_lettered", "kind": kind.value, "dead_letter_id": str(failure.id)}


def reschedule(task: ConsumerTask, event_id: object, countdown: float, reason: str) -> NoReturn:
    """Run the task again in ``countdown`` seconds without using up a retry; raises Retry."""
    request = task.request
    retries = int(request.retries or 0)
    log.info("%s: task %s waits %.2fs: %s", task.name, request.id or "", countdown, reason)
    task.note(event_id, task.subscription_name, timeline.Step.WAITING, f"{reason}; again in {countdown:.2f}s")
    attempts.ended(request.id or "", retries)
    task.run_again(countdown, retries=retries, reason=reason)
