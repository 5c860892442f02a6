"""The Redis clients the event bus uses for its own keys (counters, limiters, breakers).

Two clients, one server (REDIS_URL, or the primary REDIS_SENTINELS names:
eventbus/sentinel.py), two patiences:

- ``client()``: workers, beat, the relay and the ops pages. A command may take
  a few seconds on a loaded server; 5 s before a reply is given up.
- ``request_client()``: the request path (the sign-up limit, a device's
  budget, the 429 counters). Each socket operation is bounded by
  EVENTBUS_REQUEST_TIMEOUT (half of EVENTBUS_PUBLISH_TIMEOUT) and nothing is
  retried; its callers go through ``eventbus.protection.failfast.REDIS``.
  Behind Sentinel, asking each Sentinel for the primary is bounded the same way.
"""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventbus.sentinel import primary_client, sentinel_config


@lru_cache(maxsize=1)
def client() -> redis.Redis:
    return _client(settings.REDIS_URL, _sentinels(), settings.EVENTBUS_PUBLISH_TIMEOUT, 5.0, fail_fast=False)


def request_client() -> redis.Redis:
    """The request path's client: short timeouts, no retry (see the module's docstring)."""
    timeout = settings.EVENTBUS_REQUEST_TIMEOUT
    return _client(settings.REDIS_URL, _sentinels(), timeout, timeout, fail_fast=True)


def _sentinels() -> tuple[str, str, str, str]:
    """The Sentinel settings, as a key of the clients' cache (a test may change them)."""
    return (
        getattr(settings, "REDIS_SENTINELS", ""),
        getattr(settings, "REDIS_SENTINEL_MASTER", ""),
        getattr(settings, "REDIS_PASSWORD", ""),
        getattr(settings, "REDIS_SENTINEL_PASSWORD", ""),
    )


@lru_cache(maxsize=4)
def _client(
    url: str, sentinels: tuple[str, str, str, str], connect_timeout: float, timeout: float, *, fail_fast: bool
) -> redis.Redis:
    # Keyed by its settings, so that a changed REDIS_URL (a test's) gets a client of its own.
    # ``fail_fast`` False keeps redis-py's default retries; True: a timed-out command is not sent
    # again, the request goes on without it.
    once = Retry(NoBackoff(), 0) if fail_fast else None
    names = ("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD")
    config = sentinel_config({"REDIS_URL": url, **dict(zip(names, sentinels, strict=True))})
    if config is not None:
        return primary_client(config, timeout=timeout, connect_timeout=connect_timeout, retry=once)
    options: dict[str, object] = {"socket_connect_timeout": connect_timeout, "socket_timeout": timeout}
    if once is not None:
        options["retry"] = once
    return redis.Redis.from_url(url, decode_responses=True, **options)  # type: ignore[arg-type]


def key(*parts: str) -> str:
    """A key under this deployment's prefix, e.g. ``<prefix>eventbus:duplicates:analytics.record``."""
    return settings.REDIS_KEY_PREFIX + "eventbus:" + ":".join(parts)
