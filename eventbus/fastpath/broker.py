"""The Redis broker transport, made to fail fast, to acknowledge in bulk and to fetch many at once.

redis-py 6+ retries a failed connection three times with backoff by default:
about four seconds before a refused connection is reported. A request that
publishes after commit must not wait that long on a dead broker: the outbox
relay will send the event later. Celery's own reconnect loop (workers, beat)
still retries, with its own intervals, so nothing else changes.

Since nothing is retried, kombu's publish batches (eventbus/fastpath/publishing_batch.py)
are allowed: a failed pipeline is reported, never sent twice by redis-py.

It also keeps a worker alive when Redis vanishes under it. With Celery 5.7.0 /
kombu 5.7.0, a worker that loses its connection while it holds an
unacknowledged message cleans up in this order: ``connection.collect()``
drops the transport's link to its kombu ``Connection``, then
``connection.close()`` closes the channel, whose ``restore_unacked`` builds a
new connection pool from that link: ``AttributeError: 'NoneType' object has
no attribute 'hostname'``. Celery's ``ignore_errors`` around that close only
swallows connection errors, so the worker exited ("Unrecoverable error") and
nothing consumed until something restarted it. Here a collected channel
reports a connection error instead: the close is ignored as Celery meant, the
consumer reconnects, and the message it held comes back from Redis's
unacknowledged set after the visibility timeout (the ledger absorbs it if it
was in fact done).

Two things kombu's Redis transport does one message at a time, which cost a
batching subscriber's worker (eventbus/delivery/batch.py) three round trips per
message in its one main process:

- **Acknowledging** (``FailFastChannel.ack_many``): one pipeline removes a
  whole batch's delivery tags from the unacknowledged index and hash (kombu's
  ``QoS.ack`` does ``ZREM`` + ``HDEL`` per tag), then the tags are marked
  acknowledged in kombu's memory exactly as ``QoS.ack`` marks one.
- **Fetching** (``FailFastChannel._brpop_read``): kombu takes one message per
  ``BRPOP``, then records it as unacknowledged with a second round trip
  (``QoS.append``: ``ZADD`` to the index, ``HSET`` of ``[payload, exchange,
  routing key]`` to the hash). For a queue named with ``fetch_many`` (the
  batching strategy names its own), after a ``BRPOP`` delivered one message
  and the prefetch limit leaves room for more, one Lua script records that
  message and pops up to the room's worth more from the same queue, recording
  each as unacknowledged in the same atomic step: a popped message is in the
  unacknowledged hash the moment it leaves its list, never in neither (the
  ``BRPOP`` itself keeps kombu's gap, docs/operations.md "Known gaps"). They
  are delivered to the consumer with kombu's in-memory bookkeeping, without a
  second round trip each. The prefetch limit is respected: never more are
  taken than ``can_consume_max_estimate`` allows.

Neither changes what Redis holds for an unacknowledged message (the same keys,
under kombu's ``global_keyprefix``, the same values), so the visibility-timeout
sweep and ``restore_unacked`` put them back as before. Neither applies on
RabbitMQ (another transport): there the batching strategy acknowledges message
by message.

Neither does it let a list item that is not a kombu message stop the worker
(``readable_item``): kombu decodes a popped item without a guard and builds the
message by key, so ``LPUSH notifications 'not json'`` stopped the worker's
main process, and the item, already off its list, was lost. Such an item is
stored as a poison dead letter (its text, capped, with the reason) and the
worker goes on.

And it builds one redis-py client object per channel for its commands
instead of one per command (see ``_create_client``).

Buys: figure 2, 0.71x -> 1.82x (bulk acks) -> 2.74x (many per fetch) (levers 8, 11 and 12,
docs/benchmarks-levers.md#the-fast-path-module-by-module).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.exceptions import BatchPublishError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from eventbus.deadletters.listitems import readable_item
from eventbus.fastpath import sentevents

log = logging.getLogger(__name__)

# At most this many messages per pop-and-record script. Redis runs a script
# alone, so it bounds how long one fetch holds the server (a few ms for 2 kB
# messages); a batch of 200 (the analytics subscriber's) takes one script.
MOST_PER_FETCH = 256

# The script (eventbus/fastpath/broker_pop_and_record.lua). KEYS: the unacknowledged
# index and hash, then the queue's lists in BRPOP's order (highest priority
# first). ARGV: the time (kombu scores the index with the client's clock),
# how many to pop, and the message the BRPOP delivered (its tag and its hash
# value, or empty strings). Each popped message's record is kombu's
# ``dumps([payload, exchange, routing_key])``, built from the message's own
# bytes. A message without a delivery tag or delivery info goes back where it
# was (RPUSH to the end RPOP took it from) and the script stops: the next
# BRPOP takes it, and ``readable_item`` sets it aside as a dead letter.
_POP_AND_RECORD = (Path(__file__).parent / "broker_pop_and_record.lua").read_text()

_fetch_many: set[str] = set()


def fetch_many(queue: str) -> None:
    """Let this process's Redis consumers take up to their prefetch room from ``queue`` per round trip.

    Called by the batching strategy for its subscriber's queue. Other queues
    keep kombu's one message per ``BRPOP`` (and its fair rotation between the
    queues a worker consumes).
    """
    _fetch_many.add(queue)


class FailFastQoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        recorded = self.channel._recorded
        if delivery_tag in recorded:
            # Already in the unacknowledged index and hash (the pop-and-record
            # script wrote them): kombu's in-memory part only.
            recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)


class FailFastChannel(kombu_redis.Channel):
    QoS = FailFastQoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Delivery tags the pop-and-record script wrote to Redis, between the
        # script and their delivery (FailFastQoS.append).
        self._recorded: set[str] = set()
        self._pop_and_record: Any = None
        super().__init__(*args, **kwargs)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            # Collected after a connection loss (see the module's docstring): a
            # connection error, which the consumer's clean-up knows to ignore.
            raise RedisConnectionError("the broker connection was collected after a connection loss")
        params: dict[str, Any] = super()._connparams(asynchronous)
        params["retry"] = Retry(NoBackoff(), 0)
        return params

    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu builds a new redis-py client object for every publish, ack,
        # and unacknowledged-set write (conn_or_acquire): about 0.1 ms of
        # Python each time (redis-py's constructor), two or three times per
        # message in a worker and once per publish on the request path. A
        # client object holds no connection of its own (it borrows one from
        # the pool per command), so one per channel and pool serves them all;
        # a new pool (after a reconnect) gets a new client.
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client()
        return client

    def create_publish_batch(self, max_size: int) -> Any:
        return _ReportingPublishBatch(self, max_size)

    @property
    def supports_batch_publish(self) -> bool:
        # kombu batches publishes (Producer.batch, one pipeline) only when
        # redis-py would not replay a command, and takes any ``retry`` object
        # for a replaying one. This one never retries: batching is safe.
        return not self.retry_on_timeout

    # --- acknowledging many ---------------------------------------------------

    def ack_many(self, messages: Sequence[Any]) -> None:
        """Acknowledge ``messages`` (this channel's) in one round trip: kombu's ``Message.ack`` for each.

        A connection error leaves every one of them unacknowledged, in Redis
        and in memory, as a failed ``Message.ack`` leaves its message.
        """
        todo = [m for m in messages if not m.acknowledged and not self._no_ack(m)]
        if not todo:
            return
        tags = [m.delivery_tag for m in todo]
        qos = self.qos
        if isinstance(qos, kombu_redis.QoS):
            with self.conn_or_acquire() as client, client.pipeline() as pipe:
                pipe.zrem(qos.unacked_index_key, *tags).hdel(qos.unacked_key, *tags).execute()
        for message, tag in zip(todo, tags, strict=True):
            virtual.QoS.ack(qos, tag)
            message._state = "ACK"

    def _no_ack(self, message: Any) -> bool:
        # Message.ack does nothing for a consumer that acknowledges nothing.
        no_ack = self.no_ack_consumers
        return no_ack is not None and message.delivery_info.get("consumer_tag") in no_ack

    # --- fetching many ----------------------------------------------------------

    def _brpop_read(self, **options: Any) -> bool:
        # kombu's Channel._brpop_read, with the delivery in _deliver_popped.
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # if there's a ConnectionError, disconnect so the next
                # iteration will reconnect automatically.
                self.client.connection.disconnect()
                raise
            if dest__item:
                dest, item = dest__item
                dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
                self._queue_cycle.rotate(dest)
                payload = readable_item(item, dest)
                if payload is not None:
                    self._deliver_popped(payload, dest)
                return True
            else:
                raise Empty()
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _deliver_popped(self, payload: dict[str, Any], queue: str) -> None:
        room = self._room_after_one(queue)
        if not room:
            return self.connection._deliver(payload, queue)
        tag, value = _record(payload)
        keys = [self.qos.unacked_index_key, self.qos.unacked_key]
        keys += [self._q_for_pri(queue, pri) for pri in self.priority_steps]
        prefix = self.global_keyprefix
        taken = self._script()(keys=[prefix + key for key in keys], args=[time.time(), room, tag, value])
        payloads = [payload]
        for raw in taken:
            later = readable_item(raw, queue)
            if later is None:
                # Set aside as a dead letter; the script had recorded it as unacknowledged.
                self._forget_unacked(raw)
            else:
                payloads.append(later)
        tags = [tag, *(p["properties"]["delivery_tag"] for p in payloads[1:])]
        self._recorded.update(tags)
        delivered = 0
        try:
            for p in payloads:
                self.connection._deliver(p, queue)
                delivered += 1
        except BaseException:
            # A consumer's callback failed: the messages not yet delivered are
            # held in memory all the same, so that the channel's close puts
            # them back at once (instead of the visibility timeout's sweep).
            for p, t in zip(payloads[delivered:], tags[delivered:], strict=True):
                if t not in self.qos._delivered:
                    virtual.QoS.append(self.qos, self.Message(p, channel=self), t)
            raise
        finally:
            self._recorded.clear()

    def _forget_unacked(self, raw: bytes) -> None:
        """Remove the unacknowledged record the pop-and-record script wrote for the item ``raw``."""
        try:
            # The script recorded it only after reading its tag with Lua's
            # cjson, which reads some items Python's json does not (hex
            # numbers, say). The tag as the script saw it: the same bytes.
            tag = json.loads(raw.decode("utf-8", errors="surrogateescape"))["properties"]["delivery_tag"]
            member = tag.encode("utf-8", errors="surrogateescape")
        except (ValueError, TypeError, KeyError, AttributeError):
            # The record stays: the visibility timeout's sweep puts the item
            # back, and it is set aside again as the same dead letter (its id
            # is the hash of its text).
            log.warning("%d-byte item set aside: its unacknowledged record stays until the sweep", len(raw))
            return
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.zrem(self.qos.unacked_index_key, member).hdel(self.qos.unacked_key, member).execute()

    def _room_after_one(self, queue: str) -> int:
        """How many more messages than the one just popped may be taken from ``queue`` now."""
        if queue not in _fetch_many or queue not in self.connection._callbacks:
            return 0
        if not isinstance(self.qos, kombu_redis.QoS):
            return 0  # no acknowledgement emulation: nothing to record
        room = self.qos.can_consume_max_estimate()
        if not room:
            return 0  # no limit (0) or none left: one at a time, as kombu does
        return min(room - 1, MOST_PER_FETCH)

    def _script(self) -> Any:
        pool = self.pool
        if self._pop_and_record is None or self._pop_and_record.registered_client.connection_pool is not pool:
            # A client without kombu's key prefixing (the keys are prefixed
            # above), on the channel's own connection pool (a new one after
            # a fork or a reconnect).
            self._pop_and_record = Redis(connection_pool=pool).register_script(_POP_AND_RECORD)
        return self._pop_and_record


def _record(payload: dict[str, Any]) -> tuple[str, str]:
    """The delivery tag and unacknowledged-hash value kombu's ``QoS.append`` writes for ``payload``.

    ``payload`` passed ``readable_item``: it has each of these, of the right type.
    """
    properties = payload["properties"]
    delivery = properties["delivery_info"]
    return properties["delivery_tag"], dumps([payload, delivery["exchange"], delivery["routing_key"]])


class _ReportingPublishBatch(kombu_redis.PublishBatch):
    """kombu's publish batch, which also reports how many subscribers its ``PUBLISH``es reached.

    In the project's batches (eventbus/fastpath/publishing_batch.py) the ``PUBLISH``
    commands are the messages' ``task-sent`` events; eventbus/fastpath/sentevents.py
    stops sending them while nobody subscribes. ``flush`` is kombu 5.7's,
    but for keeping the pipeline's replies.
    """

    def flush(self) -> None:
        self._check_usable()
        if not self._buffered:
            return
        published = [n for n, (args, _) in enumerate(self.pipeline.command_stack) if args and args[0] == "PUBLISH"]
        try:
            replies = self.pipeline.execute()
        except BaseException as exc:
            self._failed = exc
            self._buffered = 0
            self.pipeline.reset()
            if isinstance(exc, Exception):
                raise BatchPublishError("Redis publish batch failed; delivery is uncertain") from exc
            raise
        self._buffered = 0
        if published:
            sentevents.heard(sum(int(replies[n]) for n in published))


class FailFastRedisTransport(kombu_redis.Transport):
    Channel = FailFastChannel
