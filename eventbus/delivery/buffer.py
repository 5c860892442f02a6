"""The main process's side of a batching subscriber: buffer its messages, hand a batch to the pool,
then acknowledge or reject each message as the pool process answers (eventbus/delivery/batch.py).

A message reaches the strategy only after the worker's consumer checked its
shape (eventbus/delivery/receive.py, eventbus/deadletters/shapes.py): one whose body
is not ``[args, kwargs, embed]``, whose arguments do not fit the task, or
that has no task id is a poison dead letter before it is buffered, so
Celery's ``Request`` can unpack every message it meets.

Batches fill up to ``N``, or what came in ``FLUSH_INTERVAL``. A buffered
message raises the worker's prefetch limit by one until it is acknowledged or
rejected, as
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

The worker's one main process handles every message (figure 2 of
docs/benchmarks.md measures it). It builds Celery's own ``Request`` for each,
as the one-by-one path would. On the project's Redis transport
(eventbus/fastpath/broker.py) it acknowledges a batch's messages in one round
trip, and fetches up to the prefetch room per round trip from a batching
subscriber's queue, each message recorded as unacknowledged in the same
atomic step as its pop. On RabbitMQ it acknowledges message by message, as
Celery does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals
from celery.utils.imports import symbol_by_name
from celery.worker.request import create_request_cls
from celery.worker.strategy import default as default_strategy
from celery.worker.strategy import hybrid_to_proto2, proto1_to_proto2

from eventbus.contract import registry
from eventbus.delivery.batch import ACK, REQUEUE, BatchConsumerTask, Item, run_batch
from eventbus.fastpath import broker_fetch
from eventbus.observability import progress

# The batching consumer's lines keep one logger, as before its buffer had a module of its own.
log = logging.getLogger("eventbus.delivery.batch")

# Seconds a message may wait in the buffer for others to join its batch: the
# latency a quiet system pays for batching.
FLUSH_INTERVAL = 0.05


def strategy(task: BatchConsumerTask, app: Any, consumer: Any, **kwargs: Any) -> Any:
    """``BatchConsumerTask.Strategy``: the worker's handler of the task's messages, which buffers them."""
    single = default_strategy(task, app, consumer, **kwargs)
    # The subscription's name is the task's. Another Celery app in a
    # process that loaded this project (shared tasks join every app) has
    # its own copy of the task: it runs it the ordinary way.
    subscription = registry.find(task.name)
    if subscription is None or not subscription.batch:
        return single
    # Up to the prefetch room per round trip from this queue (a no-op on
    # another transport than the project's Redis one).
    broker_fetch.fetch_many(subscription.queue)
    return _Buffer(task, subscription, app, consumer, single).on_message


class _Held:
    """A buffered message: what the pool process gets, and how to acknowledge or reject the message afterwards."""

    __slots__ = ("ack", "item", "message", "reject", "room")

    def __init__(self, message: Any, item: Item, ack: Any, reject: Any) -> None:
        self.message = message
        self.item = item
        # Celery's promises (ack or reject through its event loop), used when
        # the transport cannot acknowledge a batch at once.
        self.ack = ack
        self.reject = reject
        # The consumer's QoS whose prefetch limit this message raised by one
        # (_Buffer._make_room), to lower again once the message is acknowledged or rejected.
        self.room: Any = None


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
        # Celery's own request: what the one-by-one path would run under (ids, retries, headers, delivery info).
        request = self._request(message, body, ack, reject)
        item = Item(request=dict(request.request_dict), args=tuple(request._payload[0]))
        if signals.task_received.has_listeners(self.consumer):
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
        batch is acknowledged or rejected: batches could not grow past the limit, and while
        one ran the worker could fetch nothing else. With the limit raised
        per message (``kombu.common.QoS.increment_eventually``, which Celery's
        event loop applies; lowered again once the message is acknowledged or rejected), the
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
            callback=lambda answers: self._acknowledge_or_reject(batch, answers, started),
            error_callback=lambda exc: self._acknowledge_or_reject(batch, None, started, exc),
            soft_timeout=self.subscription.soft_time_limit,
            timeout=self.subscription.time_limit,
        )

    def _acknowledge_or_reject(
        self, batch: list[_Held], answers: list[str] | None, started: float, exc: Any = None
    ) -> None:
        """Each message as the pool process answered (``ACK``, ``REQUEUE``, ``REJECT``), or every one
        back to its queue when the batch failed."""
        if answers is None:
            # The pool process died or the batch ran out of time: every
            # message goes back; a message that keeps killing its process
            # is dead-lettered by its attempt's start count.
            log.error("%s: batch of %d failed (%r); its messages go back", self.task.name, len(batch), exc)
            answers = [REQUEUE] * len(batch)
        runtime = time.monotonic() - started
        # No task_postrun is sent for a batch: its end is this worker's progress (eventbus/observability/progress.py).
        progress.finished(self.consumer.hostname)
        errors = self.consumer.connection_errors
        acked = [h for h, answer in zip(batch, answers, strict=True) if answer == ACK and not h.message.acknowledged]
        for held in self._ack_in_bulk(acked):
            held.ack(log, errors)
        for held in acked:
            self._send_event(held.item.task_id, "task-succeeded", result="batched", runtime=runtime)
        for held, answer in zip(batch, answers, strict=True):
            if answer != ACK and not held.message.acknowledged:
                requeue = answer == REQUEUE
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
