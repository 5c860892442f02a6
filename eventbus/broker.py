"""The Redis broker transport, made to fail fast.

redis-py 6+ retries a failed connection three times with backoff by default:
about four seconds before a refused connection is reported. A request that
publishes after commit must not wait that long on a dead broker: the outbox
relay will send the event later. Celery's own reconnect loop (workers, beat)
still retries, with its own intervals, so nothing else changes.

Since nothing is retried, kombu's publish batches (eventbus/publishing_batch.py)
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

A batching subscriber's worker (eventbus/batching.py) acknowledges a whole
batch at once (``FailFastChannel.ack_many``): one pipeline removes all its
delivery tags from the unacknowledged index and hash, where kombu's
``QoS.ack`` does ``ZREM`` + ``HDEL`` per message, a round trip each in the
worker's one main process. The tags are then marked acknowledged in kombu's
memory exactly as ``QoS.ack`` marks one, so prefetch accounting and
``restore_unacked`` see what they would have seen. On RabbitMQ (another
transport) the strategy acknowledges message by message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry


class FailFastChannel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            # Collected after a connection loss (see the module's docstring): a
            # connection error, which the consumer's clean-up knows to ignore.
            raise RedisConnectionError("the broker connection was collected after a connection loss")
        params: dict[str, Any] = super()._connparams(asynchronous)
        params["retry"] = Retry(NoBackoff(), 0)
        return params

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
