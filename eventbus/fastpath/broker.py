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
- **Fetching** (eventbus/fastpath/broker_fetch.py): many messages per round trip
  for a batching subscriber's queue, each recorded as unacknowledged in the
  same atomic step.

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

import logging
from collections.abc import Sequence
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from eventbus.fastpath.broker_fetch import FetchMany

log = logging.getLogger(__name__)


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


class FailFastChannel(FetchMany, kombu_redis.Channel):
    QoS = FailFastQoS

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


class FailFastRedisTransport(kombu_redis.Transport):
    Channel = FailFastChannel
