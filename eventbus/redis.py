"""The Redis clients the event bus uses for its own keys (counters, limiters, breakers).

Two clients, one server (REDIS_URL), two patiences:

- ``client()``: workers, beat, the relay and the ops pages. A command may take
  a few seconds on a loaded server; 5 s before a reply is given up.
- ``request_client()``: the request path (the sign-up limit, a device's
  budget, the 429 counters). Each socket operation is bounded by
  EVENTBUS_REQUEST_TIMEOUT (half of EVENTBUS_PUBLISH_TIMEOUT) and nothing is
  retried; its callers go through ``eventbus.protection.failfast.REDIS``.
"""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry


@lru_cache(maxsize=1)
def client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        decode_responses=True,
        socket_connect_timeout=settings.EVENTBUS_PUBLISH_TIMEOUT,
        socket_timeout=5.0,
    )


def request_client() -> redis.Redis:
    """The request path's client: short timeouts, no retry (see the module's docstring)."""
    return _request_client(settings.REDIS_URL, settings.EVENTBUS_REQUEST_TIMEOUT)


@lru_cache(maxsize=4)
def _request_client(url: str, timeout: float) -> redis.Redis:
    # Keyed by its settings, so that a changed REDIS_URL (a test's) gets a client of its own.
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        # A timed-out command is not sent again: the request goes on without it.
        retry=Retry(NoBackoff(), 0),
    )


def key(*parts: str) -> str:
    """A key under this deployment's prefix, e.g. ``<prefix>eventbus:duplicates:analytics.record``."""
    return settings.REDIS_KEY_PREFIX + "eventbus:" + ":".join(parts)
