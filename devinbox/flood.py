"""Flood analytics: more analytics-only events at once than its queue's high-water mark, so that shedding shows.

The flood stops the analytics workers from consuming for FLOOD_HOLD_SECONDS
(devinbox/queuepause.py; they come back on their own), then publishes
``count`` ``user.email_verified`` events of user 0, which only the analytics
subscriber consumes, in transactions of BATCH through the real outbox. Once
the queue holds more than its mark, dispatch sheds the rest for analytics
(counted as "shed" on /ops/ and on each event's timeline); when the workers
come back they record what was queued. Every event of one flood carries the
same request id (``classroom-flood-…``), so the events page finds them, and
each its own aggregate, so that none waits for another's order.

The rows count on the analytics dashboard as verifications of user 0: this
is a classroom for a development database, refused with DJANGO_DEBUG off.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid

from django.db import transaction

from devinbox import queuepause
from eventbus import publish
from eventbus.ops_api import high_water_mark
from project import queues
from signups.events import UserEmailVerified

log = logging.getLogger(__name__)

FLOOD_MAX = 20_000
"""The most events one flood publishes: the default mark (10 000) twice over."""
BATCH = 100
"""Events per transaction. Dispatch looks at the queue's depth once per commit (and at most every
EVENTBUS_QUEUE_DEPTH_CACHE seconds), so the shedding starts within a batch or a second of the mark."""
FLOOD_HOLD_SECONDS = 60
"""How long the analytics workers stop consuming for a flood. Publishing FLOOD_MAX events took about
35 s on a busy two-core machine (some 570 a second on SQLite), so the queue crosses its mark meanwhile."""
FLOOD_USER_ID = 0
"""No user has id 0: the flood's rows are told apart from real ones by it."""


def default_count() -> int:
    """Twice the analytics queue's mark: the second half crosses it even when the depth is read a second late."""
    return bounded(2 * high_water_mark(queues.ANALYTICS))


def bounded(count: int) -> int:
    return max(1, min(int(count), FLOOD_MAX))


def new_request_id() -> str:
    return f"classroom-flood-{secrets.token_hex(6)}"


def flood(count: int, request_id: str) -> int:
    """Hold the analytics consumers, then publish ``count`` (bounded) events; returns how many were published."""
    count = bounded(count)
    # Without an analytics worker there is nothing to hold: the queue fills by itself.
    with contextlib.suppress(queuepause.NothingToPause):
        queuepause.pause(queues.ANALYTICS, FLOOD_HOLD_SECONDS)
    published = 0
    while published < count:
        size = min(BATCH, count - published)
        with transaction.atomic():
            for _ in range(size):
                aggregate = f"classroom-flood:{uuid.uuid4()}"
                publish(UserEmailVerified(user_id=FLOOD_USER_ID), aggregate=aggregate, correlation_id=request_id)
        published += size
    log.warning("classroom: flooded analytics with %d events (request id %s)", published, request_id)
    return published
