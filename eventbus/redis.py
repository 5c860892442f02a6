"""The Redis client the event bus uses for its own keys (counters, later limiters and breakers)."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=1)
def client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        decode_responses=True,
        socket_connect_timeout=settings.EVENTBUS_PUBLISH_TIMEOUT,
        socket_timeout=5.0,
    )


def key(*parts: str) -> str:
    """A key under this deployment's prefix, e.g. ``<prefix>eventbus:duplicates:analytics.record``."""
    return settings.REDIS_KEY_PREFIX + "eventbus:" + ":".join(parts)
