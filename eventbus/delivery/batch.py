"""Batching subscribers: many deliveries, one transaction, one round of bookkeeping.

A subscriber declared with ``@subscriber(..., batch=N)`` takes a list of
events. Its worker does not run one task per message: the task's strategy
(``BatchConsumerTask.Strategy``, in the worker's main process) buffers the
messages the worker prefetched and hands them to a pool process as one job
once ``N`` are waiting or ``FLUSH_INTERVAL`` seconds after the first one came.
The pool process (``run_batch``) then runs the same pipeline as a single
delivery (eventbus/delivery/pipeline.py), over the list (Zulip's
``consume(event)`` is ``consume_batch([event])``; here the single path is
``check`` and ``finish`` over a batch of one):

1. ``check``: every guard over the whole list, its Redis commands in one
   round trip (the start of every delivery counted), the ledger asked once
   for all of them; for an ordered subscriber the same query reads the
   aggregates' ledger rows, and checking order for the whole batch adds at
   most one query of the outbox (none when every event is its aggregate's
   first);
2. in one transaction, call the handler with every event the guards let go
   on and write their ledger rows (one INSERT, run times included): the
   effects and the "done" marks commit together, as for a single delivery;
3. ``finish``: count the batch, record latencies and clear the attempt
   counts (one round trip).

A message reaches the strategy only after the worker's consumer checked its
shape (eventbus/delivery/receive.py, eventbus/deadletters/shapes.py): one whose body
is not ``[args, kwargs, embed]``, whose arguments do not fit the task, or
that has no task id is a poison dead letter before it is buffered, so
``item_from_message`` can unpack every message it meets.

Every message whose verdict is not ``GO`` (poison, a duplicate, a gap or
stale event, one delivered too often, one whose aggregate has another event
in the batch) or that was in a bulk transaction that failed goes through
``ConsumerTask.consume``, one at a time, with its own request: its guards
decide again, and its retries, waits and dead letters are exactly those of
a single delivery. A message with an ETA (a retry or a wait that comes back) is run the
ordinary way, one task.

Batches fill up to ``N``, or what came in ``FLUSH_INTERVAL``. A buffered
message raises the worker's prefetch limit by one until it is settled, as
Celery does for a task with an ETA (``_Buffer._make_room``): it does not hold
one of the worker's prefetch slots (``--prefetch-multiplier`` x concurrency, 1
x 2 by default), so batches grow past the limit with the default prefetch,
the worker keeps fetching while a batch runs, and a worker that also consumes
another queue (the email's) still reserves no more of those messages than its
limit. At most ``N`` messages per pool process get this room.

On Redis, a worker with room under its limit keeps a ``BRPOP`` waiting, and
kombu's Redis transport takes a message off its queue before it records it as
unacknowledged: a host cut off from Redis while it waits can lose the message
that ``BRPOP`` takes (the two-host test, tests/scaleout, found this). The
messages fetched with it in the same round trip (below) are popped and
recorded in one atomic step and do not widen that gap, and the reconciler
(eventbus/operations/reconcile.py) sends a lost one again (docs/operations.md).

At least once: a message is acknowledged only after its batch committed (or
after its retry was published); when the pool process dies, every message of
the batch is put back, and the delivery count dead-letters one that keeps
killing its process. Exactly-once effect: the ledger's unique row per event
and subscriber, written in the handler's transaction; a concurrent duplicate
makes the bulk insert fail, and the one-by-one path then skips it.

The worker's one main process handles every message, so it does as little per
message as it can (figure 2 of docs/benchmarks.md measures it):

- it builds each message's ``Item`` (the request dict the one-by-one path
  needs: id, retries, headers, delivery info, hostname, correlation id)
  directly from the kombu message (``item_from_message``), not a Celery
  ``Request``; one is built only for ``task_received`` receivers, if any;
- on the project's Redis transport (eventbus/fastpath/broker.py) it acknowledges a
  batch's messages in one round trip, and it fetches up to the prefetch
  room per round trip from a batching subscriber's queue, each message
  recorded as unacknowledged in the same atomic step as its pop. On
  RabbitMQ it acknowledges message by message, as Celery does.

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

from celery import Task, current_app, signals
from celery.exceptions import Reject, Retry
from celery.utils.imports import symbol_by_name
from celery.worker.request import create_request_cls
from celery.worker.strategy import default as default_strategy
from celery.worker.strategy import hybrid_to_proto2, proto1_to_proto2
from django.db import transaction

from eventbus.contract import registry
from eventbus.contract.envelope import Envelope
from eventbus.contract.errors import PoisonMessage
from eventbus.delivery import attempts, ledger, pipeline
from eventbus.delivery.consumer import ConsumerTask
from eventbus.delivery.guards import Batch, Delivery
from eventbus.delivery.verdict import GO
from eventbus.fastpath import broker, dbconnections
from eventbus.observability.context import reset_fields, set_fields

log = logging.getLogger(__name__)

# Seconds a message may wait in the buffer for others to join its batch: the
# latency a quiet system pays for batching.
FLUSH_INTERVAL = 0.05

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

    # --- the worker's main process ------------------------------------------

    def Strategy(self, task: Task, app: Any, consumer: Any, **kwargs: Any) -> Any:
        single = default_strategy(task, app, consumer, **kwargs)
        # The subscription's name is the task's. Another Celery app in a
        # process that loaded this project (shared tasks join every app) has
        # its own copy of the task: it runs it the ordinary way.
        subscription = registry.find(task.name)
        if subscription is None or not subscription.batch:
            return single
        # Up to the prefetch room per round trip from this queue (a no-op on
        # another transport than the project's Redis one).
        broker.fetch_many(subscription.queue)
        return _Buffer(task, subscription, app, consumer, single).on_message

    # --- the pool process ---------------------------------------------------

    def consume_batch(self, items: list[Item]) -> list[str]:
        """Handle ``items``; returns per item what to do with its message (ack, requeue, reject)."""
        subscription = registry.get(self.subscription_name)
        outcomes = [ACK] * len(items)
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
        verdicts = dict(zip(deliveries, pipeline.check(batch), strict=True))
        fresh = {n: delivery for n, delivery in deliveries.items() if verdicts[n].goes_on}
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
            outcomes[n] = self._consume_one(items[n])
        return outcomes

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
    # What project/celery.py does before and after every task: no connection
    # that is too old, broke, or was left inside a transaction is reused.
    dbconnections.tidy()
    task.push_request(hostname=items[0].request.get("hostname") if items else None)
    try:
        return task.consume_batch(items)
    finally:
        task.pop_request()
        dbconnections.tidy()


class _Held:
    """A buffered message: what the pool process gets, and how to settle the message afterwards."""

    __slots__ = ("ack", "item", "message", "reject", "room")

    def __init__(self, message: Any, item: Item, ack: Any, reject: Any) -> None:
        self.message = message
        self.item = item
        # Celery's promises (ack or reject through its event loop), used when
        # the transport cannot acknowledge a batch at once.
        self.ack = ack
        self.reject = reject
        # The consumer's QoS whose prefetch limit this message raised by one
        # (_Buffer._make_room), to lower again once the message is settled.
        self.room: Any = None


def item_from_message(message: Any, hostname: str) -> Item:
    """The ``Item`` of a protocol 2 task message: the request dict Celery's ``Request`` would build.

    Celery's ``Request`` (celery/worker/request.py) copies the headers (id,
    task, retries, argsrepr, root and parent ids...) and adds the properties,
    reply_to, correlation_id, this worker's hostname and the delivery info;
    the body is ``(args, kwargs, embed)``. Building the dict directly spares the
    main process the rest of a request (ETA and expiry parsing, time limits,
    the task lookup), which the bulk path never uses.
    """
    args, kwargs, _embed = message.payload
    properties = message.properties or {}
    delivery_info = message.delivery_info or {}
    request = dict(message.headers)
    request.update(
        properties=properties,
        reply_to=properties.get("reply_to"),
        correlation_id=properties.get("correlation_id"),
        hostname=hostname,
        delivery_info={
            "exchange": delivery_info.get("exchange"),
            "routing_key": delivery_info.get("routing_key"),
            "priority": properties.get("priority"),
            "redelivered": delivery_info.get("redelivered", False),
        },
        args=args,
        kwargs=kwargs,
    )
    return Item(request=request, args=tuple(args))


class _Buffer:
    """The main process's side: collect messages, send a batch to the pool, ack or put back each message."""

    def __init__(
        self, task: BatchConsumerTask, subscription: registry.Subscription, app: Any, consumer: Any, single: Any
    ) -> None:
        self.task = task
        self.subscription = subscription
        self.app = app
        self.consumer = consumer
        self.single = single
        self.pending: list[_Held] = []
        self.timer: Any = None
        # Messages, buffered or in a running batch, that raised the prefetch limit by one each.
        self.room = 0
        self.most_room = subscription.batch * max(1, consumer.pool.num_processes or 1)
        eventer = consumer.event_dispatcher
        self.eventer = eventer
        self.Request = create_request_cls(
            symbol_by_name(task.Request), task, consumer.pool, consumer.hostname, eventer, app=app
        )

    def on_message(self, message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kwargs: Any) -> None:
        headers = message.headers or {}
        if headers.get("eta"):
            # A retry or a wait coming back: the ordinary path runs it at its time.
            return self.single(message, body, ack, reject, callbacks, **kwargs)
        request = None
        if body is None and "args" not in message.payload:
            item = item_from_message(message, self.consumer.hostname)
        else:
            # Protocol 1 or a hybrid message (not sent by this project): Celery converts it.
            request = self._request(message, body, ack, reject)
            item = Item(request=dict(request.request_dict), args=tuple(request._payload[0]))
        if signals.task_received.has_listeners(self.consumer):
            # Receivers expect Celery's request: build one only for them.
            request = request or self._request(message, body, ack, reject)
            signals.task_received.send(sender=self.consumer, request=request)
        name = item.request.get("shadow") or item.request.get("task")
        self._send_event(item.task_id, "task-received", name=name, args=item.request.get("argsrepr"), kwargs="{}")
        held = _Held(message, item, ack, reject)
        self._make_room(held)
        self.pending.append(held)
        if len(self.pending) >= self.subscription.batch:
            self.flush()
        elif self.timer is None:
            self.timer = self.consumer.timer.call_after(FLUSH_INTERVAL, self.flush)

    def _make_room(self, held: _Held) -> None:
        """Raise the worker's prefetch limit by one for ``held``, as Celery does for a task with an ETA.

        A buffered message would otherwise hold one of the worker's prefetch
        slots (``--prefetch-multiplier`` x ``-c``, 1 x 2 by default) until its
        batch is settled: batches could not grow past the limit, and while
        one ran the worker could fetch nothing else. With the limit raised
        per message (``kombu.common.QoS.increment_eventually``, which Celery's
        event loop applies; lowered again when the message is settled), the
        slots stay free for the worker's other tasks: a worker that also
        consumes the email queue still reserves at most its prefetch limit of
        emails. At most ``most_room`` messages (``batch`` per pool process) get
        room; the rest take slots, as all did before, and their batch goes
        when it is full or ``FLUSH_INTERVAL`` after its first message. None is
        given while Celery restores a prefetch limit it lowered after a
        connection restart (it then sets the limit itself), nor when the limit
        is 0 (no limit).
        """
        consumer = self.consumer
        qos = consumer.qos
        restoring = consumer.restart_count > 0 and not consumer._maximum_prefetch_restored
        if not qos.value or restoring or self.room >= self.most_room:
            return
        qos.increment_eventually()
        held.room = qos
        self.room += 1

    def _give_room_back(self, held: _Held) -> None:
        # The QoS the message raised, even if a connection restart has replaced it since.
        if held.room is not None:
            held.room.decrement_eventually()
            held.room = None
            self.room -= 1

    def _request(self, message: Any, body: Any, ack: Any, reject: Any) -> Any:
        if body is None and "args" not in message.payload:
            body, headers, decoded, utc = message.body, message.headers, False, self.app.uses_utc_timezone()
        elif "args" in message.payload:
            body, headers, decoded, utc = hybrid_to_proto2(message, message.payload)
        else:
            body, headers, decoded, utc = proto1_to_proto2(message, body)
        return self.Request(
            message,
            on_ack=ack,
            on_reject=reject,
            app=self.app,
            hostname=self.consumer.hostname,
            eventer=self.eventer,
            task=self.task,
            connection_errors=self.consumer.connection_errors,
            body=body,
            headers=headers,
            decoded=decoded,
            utc=utc,
        )

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        if not batch:
            return
        items = [held.item for held in batch]
        started = time.monotonic()
        self.consumer.pool.apply_async(
            run_batch,
            (self.task.name, items),
            callback=lambda outcomes: self._settle(batch, outcomes, started),
            error_callback=lambda exc: self._settle(batch, None, started, exc),
            soft_timeout=self.subscription.soft_time_limit,
            timeout=self.subscription.time_limit,
        )

    def _settle(self, batch: list[_Held], outcomes: list[str] | None, started: float, exc: Any = None) -> None:
        if outcomes is None:
            # The pool process died or the batch ran out of time: every
            # message goes back; a message that keeps killing its process
            # is dead-lettered by its delivery count.
            log.error("%s: batch of %d failed (%r); its messages go back", self.task.name, len(batch), exc)
            outcomes = [REQUEUE] * len(batch)
        runtime = time.monotonic() - started
        errors = self.consumer.connection_errors
        acked = [h for h, outcome in zip(batch, outcomes, strict=True) if outcome == ACK and not h.message.acknowledged]
        for held in self._ack_in_bulk(acked):
            held.ack(log, errors)
        for held in acked:
            self._send_event(held.item.task_id, "task-succeeded", result="batched", runtime=runtime)
        for held, outcome in zip(batch, outcomes, strict=True):
            if outcome != ACK and not held.message.acknowledged:
                requeue = outcome == REQUEUE
                held.reject(log, errors, requeue)
                self._send_event(held.item.task_id, "task-rejected", requeue=requeue)
        for held in batch:
            self._give_room_back(held)

    def _ack_in_bulk(self, acked: list[_Held]) -> list[_Held]:
        """Acknowledge what the transport can acknowledge at once; returns the rest, to ack one by one.

        The project's Redis channel (eventbus/fastpath/broker.py) takes a batch's acks
        in one round trip. Any other transport (RabbitMQ), and every message
        after a connection restart until Celery restored the prefetch limit
        (its ack promises then raise the limit step by step), go one by one.
        """
        consumer = self.consumer
        if consumer.restart_count > 0 and not consumer._maximum_prefetch_restored:
            return acked
        rest: list[_Held] = []
        per_channel: dict[Any, list[Any]] = {}
        for held in acked:
            channel = held.message.channel
            if hasattr(channel, "ack_many"):
                per_channel.setdefault(channel, []).append(held.message)
            else:
                rest.append(held)
        for channel, messages in per_channel.items():
            try:
                channel.ack_many(messages)
            except consumer.connection_errors as exc:
                # As a failed Message.ack: logged, the messages stay unacknowledged
                # and come back (the ledger absorbs what was done).
                log.critical("Couldn't ack %d messages, reason: %r", len(messages), exc, exc_info=True)
        return rest

    def _send_event(self, task_id: str, kind: str, **fields: Any) -> None:
        if self.eventer is not None and self.eventer.enabled and self.task.send_events:
            self.eventer.send(kind, uuid=task_id, **fields)
