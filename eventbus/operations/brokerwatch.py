"""Telling that the broker lost its data, instead of waiting to find out.

A Redis that restarts without persistence, has its database flushed (FLUSHDB), or
fails over to a replica that missed the last writes forgets every message
waiting in its queues, and says nothing. So a token is kept in two places: in
the broker's Redis (a plain key under the deployment's prefix) and in the
database (``BrokerMarker``). Every check swaps the token for a new one in both,
the Redis half with a compare-and-set: if Redis no longer holds the token the
database names, it lost data since the last check. Rotating at every check
also catches a Redis that came back from an older snapshot: its token is an
old one.

A loss is logged at CRITICAL, stored as a ``BrokerLoss`` row (counted in
/metrics, shown on /ops/), the queues are declared again (kombu's Redis
transport keeps its exchange bindings in Redis: without them a message would
be routed nowhere), and the reconciler then checks every event sent before
the loss at once, not ``EVENTBUS_REDELIVER_AFTER`` later.

Behind Sentinel (eventbus/sentinel.py) the watch asks the primary the Sentinels
name now, so a failover to a replica that missed the marker's last rotation is
found like a restart. A replica that had the marker may still have missed the
messages written after it (replication is asynchronous), so behind Sentinel a
change of primary is itself taken as a loss: the primary's replication id
(``master_replid``, new on every promotion) is kept beside the marker, and a
different one at the next check is recorded and reconciled the same way. What
was not lost comes twice, and the ledger absorbs the copy.

Only a Redis broker is watched: RabbitMQ keeps durable queues across restarts,
and what it may lose (a node without mirrored or quorum queues) is caught by
the reconciler's time-based pass.
"""

from __future__ import annotations

import logging
import uuid
from functools import lru_cache

import redis
from celery import current_app
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from eventbus import redis as eventbus_redis
from eventbus.models import BrokerLoss, BrokerMarker

log = logging.getLogger(__name__)

MARKER_NAME = "broker"
"""The ``BrokerMarker`` row of the one broker this deployment uses."""

# Swap the token if it is still the expected one; otherwise answer what is there (nil when gone).
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2])
    return 1
end
return current
"""


def watched() -> bool:
    """Whether the broker is a Redis (the only kind this watches)."""
    return str(current_app.conf.broker_url).startswith(("redis://", "rediss://", "unix://", "sentinel://"))


def _behind_sentinel(url: str) -> bool:
    return url.startswith("sentinel://")


def _broker_client(url: str) -> redis.Redis:
    if _behind_sentinel(url):
        # The broker behind Sentinel is the bus's own Redis (the same primary and database,
        # eventbus/sentinel.py): its client follows the primary the Sentinels name.
        return eventbus_redis.client()
    return _url_client(url)


@lru_cache(maxsize=4)
def _url_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=settings.EVENTBUS_PUBLISH_TIMEOUT, socket_timeout=5.0
    )


def _failed_over(client: redis.Redis) -> bool:
    """Whether the primary's replication id changed since the last check (a promotion); keeps the new one."""
    current = str(client.info("replication").get("master_replid", ""))
    previous = client.getset(marker_key() + ":primary", current)
    return previous is not None and previous != current


def marker_key() -> str:
    return settings.REDIS_KEY_PREFIX + "eventbus:broker-marker"


def check() -> BrokerLoss | None:
    """Rotate the marker; returns the ``BrokerLoss`` recorded when Redis had lost it, else None.

    Raises redis' errors when the broker cannot be reached (nothing can be
    told then; the caller tries again at its next run). The first check of a
    deployment only writes the marker.
    """
    if not watched():
        return None
    url = str(current_app.conf.broker_url)
    client = _broker_client(url)
    failed_over = _behind_sentinel(url) and _failed_over(client)
    new = uuid.uuid4().hex
    stored = BrokerMarker.objects.filter(name=MARKER_NAME).first()
    if stored is None:
        client.set(marker_key(), new)
        BrokerMarker.objects.update_or_create(name=MARKER_NAME, defaults={"token": new, "written_at": timezone.now()})
        return None
    answer = client.eval(_COMPARE_AND_SET, 1, marker_key(), stored.token, new)
    if answer == 1:
        try:
            rows = BrokerMarker.objects.filter(name=MARKER_NAME, token=stored.token)
            rows.update(token=new, written_at=timezone.now())
        except DatabaseError:
            # The database went away between the two halves (a restart): Redis gets its old token back,
            # or the next check would take the one the database never stored for a broker that lost its data.
            client.eval(_COMPARE_AND_SET, 1, marker_key(), new, stored.token)
            raise
        if not failed_over:
            return None
        reason = (
            f"the Sentinels' primary changed since the check at {stored.written_at:%Y-%m-%d %H:%M:%S} UTC (a "
            "failover): replication is asynchronous, so messages written just before it may be missing on it"
        )
        return _announce(BrokerLoss.objects.create(reason=reason))
    # Lost, or another checker rotated it between our read and our swap: tell them apart by the database.
    if BrokerMarker.objects.filter(name=MARKER_NAME).exclude(token=stored.token).exists():
        return None
    reason = (
        f"the broker's Redis no longer holds the marker written at {stored.written_at:%Y-%m-%d %H:%M:%S} UTC "
        f"({'the key is gone' if answer is None else 'it holds an older one'}): it restarted without its data, "
        "was flushed, or failed over to a replica that missed writes"
    )
    with transaction.atomic():
        updated = BrokerMarker.objects.filter(name=MARKER_NAME, token=stored.token).update(
            token=new, written_at=timezone.now()
        )
        if not updated:
            return None  # another checker recorded this loss
        loss = BrokerLoss.objects.create(reason=reason)
    client.set(marker_key(), new)
    return _announce(loss)


def _announce(loss: BrokerLoss) -> BrokerLoss:
    log.critical("BROKER DATA LOSS: %s; every event sent before now is checked against the ledger at once", loss.reason)
    declare_queues()
    return loss


def declare_queues() -> None:
    """Declare every task queue and its binding again on the broker (after a loss, none are left)."""
    with current_app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in current_app.amqp.queues.values():
            queue(channel).declare()
