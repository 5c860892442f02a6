"""``@subscriber``: one decorated function is a consumer, with its task, queue and retry policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import shared_task
from django.conf import settings

from eventbus.contract import registry
from eventbus.contract.errors import EventDeclarationError
from eventbus.contract.registry import BreakerFactory, Handler, LimiterFactory, Subscription
from eventbus.contract.retry import RetryPolicy
from eventbus.delivery.batch import BatchConsumerTask
from eventbus.delivery.consumer import ConsumerTask
from eventbus.operations import checks


def subscriber(
    *event_types: str,
    name: str,
    queue: str,
    label: str,
    done_label: str = "done",
    retry: RetryPolicy | None = None,
    critical: bool = True,
    ordered: bool = False,
    limiter: LimiterFactory | None = None,
    breaker: BreakerFactory | None = None,
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
    transactional: bool = True,
    batch: int | None = None,
) -> Callable[[Handler], ConsumerTask]:
    """Make ``handler(event)`` a consumer of ``event_types``.

    The handler receives the decoded :class:`~eventbus.contract.envelope.Envelope`. It
    runs at most once per event with effect: delivered at least once, it is
    called inside a transaction together with the ledger entry, and a
    redelivery finds the entry and skips it. Raise one of ``retry.transient``
    to be retried with backoff; anything else is permanent.

    ``name`` is the Celery task name and must stay stable: messages in flight
    and the ledger refer to it. ``critical`` subscribers never lose an event
    under load (dispatch holds it in the outbox); the others are shed above
    their queue's high-water mark. ``ordered`` defers an event until the
    aggregate's earlier ones were handled. ``limiter`` and ``breaker`` build
    the shared rate limiter and circuit breaker of the provider the handler
    calls; waiting for them uses up no retry. A handler that runs past
    ``soft_time_limit`` (default EVENTBUS_SOFT_TIME_LIMIT) fails transiently;
    past ``time_limit`` its process is killed and the task redelivered.

    ``transactional=False`` is for a handler whose effect is outside the
    database (an email, a call to a provider): it runs outside any
    transaction, so that no database lock is held while it waits on the
    network, and its ledger entry is written right after it. Its effect is
    then at least once (a worker that dies between the two repeats it), so
    it must carry an idempotency key, as the welcome email's Message-ID does.

    ``batch=N`` makes the handler take a list of up to N events, whose
    effects and ledger entries commit in one transaction
    (eventbus/delivery/batch.py): for cheap database effects, where one transaction
    per event is the cost. The time limits then apply to a whole batch.
    """
    if not event_types:
        raise EventDeclarationError(f"subscriber {name!r} names no event type")
    if queue not in settings.EVENTBUS_QUEUES:
        raise EventDeclarationError(f"subscriber {name!r} uses queue {queue!r}, which EVENTBUS_QUEUES does not declare")
    if "." not in name:
        raise EventDeclarationError(f"subscriber name {name!r} must be '<app>.<what it does>'")
    policy = retry or RetryPolicy()
    soft_limit = float(settings.EVENTBUS_SOFT_TIME_LIMIT if soft_time_limit is None else soft_time_limit)
    hard_limit = float(settings.EVENTBUS_TIME_LIMIT if time_limit is None else time_limit)
    checks.check_declaration(name, policy, soft_limit, hard_limit)
    if batch is not None and (batch < 1 or limiter is not None or breaker is not None or not transactional):
        raise EventDeclarationError(
            f"subscriber {name!r}: batch must be a positive size, for a transactional handler without a "
            "limiter or a breaker (a batch commits its effects together, and cannot wait per event)"
        )

    def declare(handler: Handler) -> ConsumerTask:
        registry.ensure_free(name)

        def run(self: ConsumerTask, envelope: Any) -> dict[str, str]:
            return self.consume(envelope)

        run.__name__ = handler.__name__ if handler.__name__.isidentifier() else "handler"
        run.__doc__ = handler.__doc__
        run.__module__ = handler.__module__
        task: ConsumerTask = shared_task(
            bind=True,
            base=BatchConsumerTask if batch else ConsumerTask,
            name=name,
            max_retries=policy.max_retries,
            soft_time_limit=soft_limit,
            time_limit=hard_limit,
            # At least once: acknowledge after the work, and put the message
            # back when the worker process dies mid-task.
            acks_late=True,
            reject_on_worker_lost=True,
            # A batch's messages have no task run to store a result of; the
            # ledger row is each delivery's record.
            ignore_result=bool(batch),
        )(run)
        subscription = Subscription(
            name=name,
            event_types=tuple(event_types),
            queue=queue,
            handler=handler,
            retry=policy,
            critical=critical,
            label=label,
            done_label=done_label,
            task=task,
            ordered=ordered,
            limiter=limiter,
            breaker=breaker,
            soft_time_limit=soft_limit,
            time_limit=hard_limit,
            transactional=transactional,
            batch=batch,
        )
        task.subscription_name = name
        registry.register(subscription)
        return task

    return declare
