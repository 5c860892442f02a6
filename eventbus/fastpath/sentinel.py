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

import itertools
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from kombu.transport import redis as kombu_redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
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

    def _brpop_read(self, **options: Any) -> bool:
        # A primary demoted while a worker's BRPOP waits on it answers that BRPOP
        # "UNBLOCKED ... (master -> replica?)": a plain ResponseError to kombu, after
        # which the worker stayed alive and consumed nothing (measured: a minute, until
        # stopped). It is a failover: dropped as a lost connection, the consumer
        # reconnects through the Sentinels. A BRPOP sent to a replica answers READONLY,
        # which redis-py's Sentinel connection already turns into a ConnectionError.
        try:
            return bool(super()._brpop_read(**options))
        except ResponseError as exc:
            if not str(exc).startswith(("UNBLOCKED", "READONLY")):
                raise
            self.client.connection.disconnect()
            raise RedisConnectionError(f"the primary was demoted under a waiting BRPOP: {exc}") from exc


class FailFastSentinelTransport(kombu_redis.SentinelTransport):
    Channel = FailFastSentinelChannel


def same_transport(alternates: Sequence[str]) -> Iterator[str]:
    """kombu's failover strategy for this broker (CELERY_BROKER_FAILOVER_STRATEGY): stay on this transport.

    The ``;``-separated URLs are the Sentinels, all asked by every channel
    anyway, not brokers to fail over between. kombu's default strategy would
    switch a failing connection to the next URL, and a switch to a URL resets
    the transport to the one its scheme names (kombu's stock ``sentinel``),
    without these options: no Sentinel password, no fail-fast, and a worker
    that could no longer find the primary (measured: "No master found" for
    as long as the test ran). Switching to a bare host name keeps the transport.
    """
    return itertools.repeat(urlsplit(alternates[0]).hostname or "127.0.0.1")
