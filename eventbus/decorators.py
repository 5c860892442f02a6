"""``@subscriber``: one decorated function is a consumer, with its task, queue and retry policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import shared_task

from eventbus import registry
from eventbus.consumer import ConsumerTask
from eventbus.errors import EventDeclarationError
from eventbus.registry import Handler, Subscription
from eventbus.retry import RetryPolicy
from project import queues


def subscriber(
    *event_types: str,
    name: str,
    queue: str,
    label: str,
    done_label: str = "done",
    retry: RetryPolicy | None = None,
    critical: bool = True,
) -> Callable[[Handler], ConsumerTask]:
    """Make ``handler(event)`` a consumer of ``event_types``.

    The handler receives the decoded :class:`~eventbus.envelope.Envelope`. It
    runs at most once per event with effect: delivered at least once, it is
    called inside a transaction together with the ledger entry, and a
    redelivery finds the entry and skips it. Raise one of ``retry.transient``
    to be retried with backoff; anything else is permanent.

    ``name`` is the Celery task name and must stay stable: messages in flight
    and the ledger refer to it.
    """
    if not event_types:
        raise EventDeclarationError(f"subscriber {name!r} names no event type")
    if queue not in queues.WORKER_QUEUES:
        raise EventDeclarationError(
            f"subscriber {name!r} uses queue {queue!r}, which project/queues.py does not declare"
        )
    if "." not in name:
        raise EventDeclarationError(f"subscriber name {name!r} must be '<app>.<what it does>'")
    policy = retry or RetryPolicy()

    def declare(handler: Handler) -> ConsumerTask:
        registry.ensure_free(name)

        def run(self: ConsumerTask, envelope: Any) -> dict[str, str]:
            return self.consume(envelope)

        run.__name__ = handler.__name__ if handler.__name__.isidentifier() else "handler"
        run.__doc__ = handler.__doc__
        run.__module__ = handler.__module__
        task: ConsumerTask = shared_task(
            bind=True,
            base=ConsumerTask,
            name=name,
            max_retries=policy.max_retries,
            # At least once: acknowledge after the work, and put the message
            # back when the worker process dies mid-task.
            acks_late=True,
            reject_on_worker_lost=True,
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
        )
        task.subscription_name = name
        registry.register(subscription)
        return task

    return declare
