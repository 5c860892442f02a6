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

And it builds one redis-py client object per channel for its commands
instead of one per command (see ``_create_client``).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
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


class FailFastRedisTransport(kombu_redis.Transport):
    Channel = FailFastChannel
