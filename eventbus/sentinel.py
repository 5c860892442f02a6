"""Redis behind Sentinel: where the settings say the Sentinels are, and clients that follow the primary.

One setting names the Sentinels (``REDIS_SENTINELS=host:port,host:port``) and
one the primary they watch (``REDIS_SENTINEL_MASTER``); every Redis client of
the bus (its own keys, the broker, the broker watch) asks them which node is
the primary instead of holding a fixed address, so a failover needs no setting
changed and no process restarted.

How the other Redis settings combine with them, and why:

- ``REDIS_URL`` still gives the **database index** (``redis://sentinel/2``:
  database 2), and only that: its host and port are ignored, because the
  Sentinels name the node. Keeping it means one variable still says which
  database the deployment uses, with or without Sentinel. A password in it is
  refused: with Sentinel the password comes from ``REDIS_PASSWORD`` alone, so
  it is never in a URL that could be logged (rediss:// and unix:// are
  refused too: TLS and sockets behind Sentinel are not tested here).
- ``REDIS_KEY_PREFIX`` applies unchanged, to the bus's keys and the broker's
  (kombu's ``global_keyprefix``).
- ``REDIS_PASSWORD`` is the Redis nodes' password (``requirepass``; the
  replicas' ``masterauth`` is the same), ``REDIS_SENTINEL_PASSWORD`` the
  Sentinels' own, if they have one.
- The broker URL is derived (``sentinel://h1:p1;sentinel://h2:p2/<db>``, kombu's
  form); an explicit ``CELERY_BROKER_URL`` naming a Redis would pin one node
  and is refused; an ``amqp://`` one (RabbitMQ as the broker) is fine.

A demoted primary answers ``READONLY`` to a write: redis-py's
``SentinelManagedConnection`` turns that into a ``ConnectionError`` and drops
the connection, so the next connection asks the Sentinels again. A stalled
primary times out (the clients' socket timeouts), which is a ``TimeoutError``,
also a connection failure. Callers treat both as they treat a Redis that went
away: the worker reconnects and the message comes back (see
eventbus/fastpath/sentinel.py), the request path fails fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel://"


@dataclass(frozen=True)
class SentinelConfig:
    """Where the Sentinels are and what they watch, from the settings (``sentinel_config``)."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    password: str
    sentinel_password: str

    def broker_url(self) -> str:
        """kombu's Sentinel broker URL: every Sentinel, ``;``-separated, the last carrying the database."""
        hosts = ";".join(f"{SENTINEL_SCHEME}{host}:{port}" for host, port in self.sentinels)
        return f"{hosts}/{self.db}"

    def sentinel_kwargs(self, timeout: float, retry: Retry | None = None) -> dict[str, Any]:
        """How to talk to a Sentinel: its password, and bounded waits (redis-py's default is none)."""
        kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        if retry is not None:
            kwargs["retry"] = retry
        return kwargs


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` as pairs; raises ValueError saying what is wrong (never empty)."""
    found: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host or "@" in host:
            raise ValueError(
                f"REDIS_SENTINELS: {item!r} is not host:port; write the Sentinels as "
                "host:port,host:port (e.g. 10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379)"
            )
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def sentinel_config(values: Mapping[str, Any]) -> SentinelConfig | None:
    """The Sentinel settings of ``values`` (a settings namespace), None without REDIS_SENTINELS.

    Raises ValueError, with what to change, for settings that contradict each other.
    """
    text = str(values.get("REDIS_SENTINELS") or "").strip()
    if not text:
        return None
    sentinels = parse_sentinels(text)
    master = str(values.get("REDIS_SENTINEL_MASTER") or "").strip()
    if not master:
        raise ValueError(
            "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not: set it to the name the Sentinels "
            "monitor the primary under (their 'sentinel monitor <name> ...' line)"
        )
    url = urlsplit(str(values.get("REDIS_URL") or "redis://sentinel/0"))
    if url.scheme != "redis":
        raise ValueError(
            f"REDIS_SENTINELS is set but REDIS_URL is a {url.scheme}:// URL: behind Sentinel, REDIS_URL gives only "
            "the database index, as redis://sentinel/<db> (TLS and Unix sockets behind Sentinel are not supported)"
        )
    if url.password:
        raise ValueError(
            "REDIS_SENTINELS is set and REDIS_URL holds a password: remove it from REDIS_URL and set REDIS_PASSWORD"
        )
    path = url.path.strip("/") or "0"
    if not path.isdigit():
        raise ValueError(f"REDIS_URL's database {path!r} is not a number: write redis://sentinel/<db>, e.g. /0")
    broker = str(values.get("CELERY_BROKER_URL") or "")
    if broker.startswith(("redis://", "rediss://", "unix://", SENTINEL_SCHEME)):
        raise ValueError(
            "REDIS_SENTINELS is set and CELERY_BROKER_URL names a Redis of its own: unset CELERY_BROKER_URL (the "
            "broker then follows the Sentinels' primary too), or set it to an amqp:// URL for RabbitMQ"
        )
    return SentinelConfig(
        sentinels=sentinels,
        master=master,
        db=int(path),
        password=str(values.get("REDIS_PASSWORD") or ""),
        sentinel_password=str(values.get("REDIS_SENTINEL_PASSWORD") or ""),
    )


def primary_client(
    config: SentinelConfig, *, timeout: float, connect_timeout: float, retry: Retry | None
) -> redis.Redis:
    """A client of the primary the Sentinels name now; every new connection asks them again.

    ``retry`` None keeps redis-py's default (three retries with backoff, which
    rides over the seconds of a failover); the request path passes one that
    never retries. Asking the Sentinels is bounded by ``connect_timeout`` per
    Sentinel, tried in turn.
    """
    connection: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": connect_timeout}
    if retry is not None:
        connection["retry"] = retry
    manager = Sentinel(list(config.sentinels), sentinel_kwargs=config.sentinel_kwargs(connect_timeout, retry))
    return manager.master_for(
        config.master,
        redis_class=redis.Redis,
        db=config.db,
        password=config.password or None,
        decode_responses=True,
        **connection,
    )
