"""Batching subscribers: many deliveries, one transaction, one round of bookkeeping.

A subscriber declared with ``@subscriber(..., batch=N)`` takes a list of
events. Its worker does not run one task per message: the task's strategy
(``BatchConsumerTask.Strategy``, in the worker's main process) buffers the
messages the worker prefetched and hands them to a pool process as one job
once ``N`` are waiting or ``FLUSH_INTERVAL`` seconds after the first one came
(eventbus/delivery/buffer.py).
The pool process (``run_batch``) then runs the same pipeline as a single
delivery (eventbus/delivery/pipeline.py), over the list (Zulip's
``consume(event)`` is ``consume_batch([event])``; here the single path is
``check`` and ``finish`` over a batch of one):

1. ``check``: every guard over the whole list, its Redis commands in one
   round trip (the start of every attempt counted), the ledger asked once
   for all of them; for an ordered subscriber the same query reads the
   aggregates' ledger rows, and checking order for the whole batch adds at
   most one query of the outbox (none when every event is its aggregate's
   first);
2. in one transaction, call the handler with every event the guards let go
   on and write their ledger rows (one INSERT, run times included): the
   effects and the "done" marks commit together, as for a single delivery;
3. ``finish``: count the batch, record latencies and clear the attempt
   counts (one round trip).

Every message whose verdict is not ``GO`` (poison, a duplicate, a gap or
stale event, one delivered too often, one whose aggregate has another event
in the batch) or that was in a bulk transaction that failed goes through
``ConsumerTask.consume``, one at a time, with its own request: its guards
decide again, and its retries, waits and dead letters are exactly those of
a single delivery. A message with an ETA (a retry or a wait that comes back) is run the
ordinary way, one task.

At least once: a message is acknowledged only after its batch committed (or
after its retry was published); when the pool process dies, every message of
the batch is put back, and its attempt's start count dead-letters one that keeps
killing its process. Exactly-once effect: the ledger's unique row per event
and subscriber, written in the handler's transaction; a concurrent duplicate
makes the bulk insert fail, and the one-by-one path then skips it.

Results are not stored for batched deliveries (there is no Celery task per
message to store one for); the ledger row is the record of each. Task events
(``task-received``, ``task-succeeded``, ``task-rejected``) are sent per
message when the worker sends events, so Flower shows each.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from celery import current_app
from celery.exceptions import Reject, Retry
from django.db import transaction

from eventbus.contract import registry
from eventbus.contract.envelope import Envelope
from eventbus.contract.errors import PoisonMessage
from eventbus.delivery import ledger, pipeline
from eventbus.delivery.consumer import ConsumerTask
from eventbus.delivery.guards import Batch, Delivery, attempts
from eventbus.delivery.verdict import GO
from eventbus.fastpath import dbconnections
from eventbus.observability.context import reset_fields, set_fields

log = logging.getLogger(__name__)

# What the pool process answers for each message of a batch: acknowledge it,
# reject it back to its queue, or reject it for good.
ACK = "ack"
REQUEUE = "requeue"
REJECT = "reject"


@dataclass(frozen=True)
class Item:
    """One message of a batch as the pool process gets it (picklable, like Celery's own request)."""

    request: dict[str, Any]
    """Celery's request dict: id, retries, headers, delivery_info, hostname..."""
    args: tuple[Any, ...]

    @property
    def task_id(self) -> str:
        return str(self.request.get("id") or "")

    @property
    def retries(self) -> int:
        return int(self.request.get("retries") or 0)

    @property
    def raw(self) -> Any:
        return self.args[0] if self.args else None


class BatchConsumerTask(ConsumerTask):
    """A subscriber task whose messages are handled many at a time (see the module's docs)."""

    # The worker's main process buffers this task's messages (eventbus/delivery/buffer.py).
    Strategy = "eventbus.delivery.buffer:strategy"

    # --- the pool process ---------------------------------------------------

    def consume_batch(self, items: list[Item]) -> list[str]:
        """Handle ``items``; returns per item what to do with its message (ack, requeue, reject)."""
        subscription = registry.get(self.subscription_name)
        answers = [ACK] * len(items)
        deliveries: dict[int, Delivery] = {}
        alone: list[int] = []
        for n, item in enumerate(items):
            try:
                event = Envelope.from_dict(item.raw)
            except PoisonMessage:
                alone.append(n)
                continue
            deliveries[n] = Delivery(subscription, event, item.raw, item.task_id, item.retries)
        batch = Batch(subscription, list(deliveries.values()), bulk=True)
        try:
            verdicts = dict(zip(deliveries, pipeline.check(batch), strict=True))
        except Exception as exc:
            # The guards could not ask the ledger or Redis (the database restarting). Each message goes
            # its own way, where such a failure is retried with backoff: the whole batch given back would
            # come again at once, its starts counted as if its worker had died, until dead-lettered so.
            log.warning(
                "%s: batch of %d not checked (%s: %s); handling them one by one",
                subscription.name,
                len(deliveries),
                type(exc).__name__,
                exc,
            )
            verdicts = {}
        fresh = {n: delivery for n, delivery in deliveries.items() if n in verdicts and verdicts[n].goes_on}
        alone += [n for n in deliveries if n not in fresh]
        if fresh:
            if self._bulk(subscription, fresh):
                pipeline.finish(Batch(subscription, list(fresh.values()), bulk=True), GO)
            else:
                # Whatever struck mid-transaction (a time limit while waiting
                # for SQLite's lock) may have left the connection inside it.
                dbconnections.tidy()
                alone += list(fresh)
        # Delivered on its own, each counts its start again: take the batch's count back.
        attempts.uncount_many([(deliveries[n].task_id, deliveries[n].retries) for n in alone if n in deliveries])
        for n in sorted(alone, key=lambda n: _sort_key(deliveries.get(n))):
            answers[n] = self._consume_one(items[n])
        return answers

    def _bulk(self, subscription: registry.Subscription, fresh: dict[int, Delivery]) -> bool:
        """Call the handler with every fresh event and write their ledger rows, in one transaction;
        False when that transaction failed (its events then go one by one)."""
        started = time.monotonic()
        hostname = self.request.hostname or ""
        try:
            # The ledger rows go in after the handler, with its run time, in
            # the same transaction: they commit with the effects or not at all,
            # and a concurrent duplicate still fails the whole transaction.
            with transaction.atomic():
                subscription.handler([delivery.event for delivery in fresh.values()])
                ledger.claim_many(
                    [(delivery.event, delivery.task_id) for delivery in fresh.values()],
                    subscription.name,
                    hostname,
                    runtime_ms=(time.monotonic() - started) * 1000 / len(fresh),
                )
        except Exception as exc:
            # A duplicate delivered at the same moment, or one event the
            # handler refuses: each goes its own way, with its own retries.
            log.warning(
                "%s: batch of %d not committed (%s: %s); handling them one by one",
                subscription.name,
                len(fresh),
                type(exc).__name__,
                exc,
            )
            return False
        # Counted as a batch (BATCHES, BATCHED) by the caller's finish, in its round trip.
        if log.isEnabledFor(logging.INFO):
            # One line per event, with its own ids, as a single delivery logs:
            # a request id still leads to the batch that handled its event.
            for delivery in fresh.values():
                event = delivery.event
                bound = set_fields(
                    correlation_id=event.correlation_id,
                    event_id=event.id,
                    event_type=event.type,
                    subscriber=subscription.name,
                    task_id=delivery.task_id,
                )
                try:
                    label, size = subscription.done_label, len(fresh)
                    log.info("%s: event %s %s in a batch of %d", subscription.name, event.id, label, size)
                finally:
                    reset_fields(bound)
        return True

    def _consume_one(self, item: Item) -> str:
        """``ConsumerTask.consume`` for one message of the batch, under that message's own request."""
        self.push_request(**{**item.request, "args": list(item.args), "kwargs": {}, "called_directly": False})
        bound = set_fields(task_id=item.task_id)
        try:
            self.consume(item.raw)
        except Retry:
            return ACK  # scheduled again: this message is done with
        except Reject as reject:
            return REQUEUE if reject.requeue else REJECT
        except Exception:
            log.exception("%s: task %s failed outside the consumer's handling", self.name, item.task_id)
            return REQUEUE
        finally:
            reset_fields(bound)
            self.pop_request()
        return ACK


def _sort_key(delivery: Delivery | None) -> tuple[str, int]:
    # Events of one aggregate in sequence order, so that an ordered
    # subscriber meets a predecessor before its successor.
    return (delivery.event.aggregate, delivery.event.sequence) if delivery is not None else ("", 0)


def run_batch(task_name: str, items: list[Item]) -> list[str]:
    """The pool process's job: one batch of ``task_name``'s messages."""
    task = current_app.tasks[task_name]
    # What eventbus/signals.py does before and after every task: no connection
    # that is too old, broke, or was left inside a transaction is reused.
    dbconnections.tidy()
    task.push_request(hostname=items[0].request.get("hostname") if items else None)
    try:
        return task.consume_batch(items)
    finally:
        task.pop_request()
        dbconnections.tidy()
