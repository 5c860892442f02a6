"""The broker transport behind Redis Sentinel: eventbus/fastpath/broker.py's, on kombu's Sentinel channel.

kombu's ``SentinelChannel`` (kombu/transport/redis.py) asks the Sentinels for
the primary whenever it builds a connection pool, and redis-py's
``SentinelManagedConnection`` asks again on every new connection. Mixed in
under ``FailFastChannel`` it keeps everything that transport adds: no
redis-py retries on the request path, bulk acknowledgements, many messages per
fetch, the poison guard, one client object per channel and pool, and
``global_keyprefix`` (kombu's, applied by the base channel).

A failover reaches a worker as a lost connection, never as a task failure:
the old primary killed or stalled (a ``ConnectionError`` or ``TimeoutError``)
or demoted (``READONLY`` on a write, which redis-py's Sentinel connection
turns into a ``ConnectionError`` after dropping itself). Celery's consumer
treats those as a lost broker: it reconnects (asking the Sentinels again),
and a message it held comes back from the unacknowledged set after the
visibility timeout; a copy whose effect was done is absorbed by the ledger.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventbus.fastpath.broker import FailFastChannel


class FailFastSentinelChannel(FailFastChannel, kombu_redis.SentinelChannel):
    """``FailFastChannel`` whose pools come from kombu's Sentinel channel (MRO: fast path first).

    Two transport options of its own carry the passwords, so that no broker URL
    holds one (Celery censors option names containing "pass" when it shows its
    settings): ``redis_password`` for the Redis nodes, ``sentinel_password``
    for the Sentinels.
    """

    # kombu's own "sentinel_kwargs" option gives way to the property below.
    from_transport_options = (
        *(name for name in kombu_redis.SentinelChannel.from_transport_options if name != "sentinel_kwargs"),
        "redis_password",
        "sentinel_password",
    )
    redis_password: str = ""
    sentinel_password: str = ""

    @property  # type: ignore[override]
    def sentinel_kwargs(self) -> dict[str, Any]:
        # How kombu's Sentinel channel talks to each Sentinel. Derived from this
        # channel's own connect timeout, so the request path's producer pool
        # (EVENTBUS_REQUEST_TRANSPORT_OPTIONS) asks the Sentinels as briefly as it
        # connects to Redis; and never retried, as the channel's own commands.
        kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_connect_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        params = super()._connparams(asynchronous)
        if self.redis_password:
            params["password"] = self.redis_password
        return params


class FailFastSentinelTransport(kombu_redis.SentinelTransport):
    Channel = FailFastSentinelChannel
