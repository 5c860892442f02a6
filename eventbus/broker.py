"""The Redis broker transport, made to fail fast.

redis-py 6+ retries a failed connection three times with backoff by default:
about four seconds before a refused connection is reported. A request that
publishes after commit must not wait that long on a dead broker: the outbox
relay will send the event later. Celery's own reconnect loop (workers, beat)
still retries, with its own intervals, so nothing else changes.

Since nothing is retried, kombu's publish batches (eventbus/publishing_batch.py)
are allowed: a failed pipeline is reported, never sent twice by redis-py.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class FailFastChannel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = super()._connparams(asynchronous)
        params["retry"] = Retry(NoBackoff(), 0)
        return params

    @property
    def supports_batch_publish(self) -> bool:
        # kombu batches publishes (Producer.batch, one pipeline) only when
        # redis-py would not replay a command, and takes any ``retry`` object
        # for a replaying one. This one never retries: batching is safe.
        return not self.retry_on_timeout


class FailFastRedisTransport(kombu_redis.Transport):
    Channel = FailFastChannel
