"""Effects that happened while their ledger entry could not be written: kept in Redis until it is.

An effect outside the database (an email) is done first, and its ledger entry
written right after (eventbus/delivery/pipeline.py). When the database is away
at that moment (stopped, restarting, failing over), the entry fails and the
delivery is retried; without a note of what happened, the retry (or the
relay's copy of an event whose dispatched mark failed too) would find no entry
and send the email a second time. So the effect is noted here, per event and
subscriber, and a later delivery that finds the note writes the entry without
running the effect again; the note is deleted once the entry is written. The
effect lock's guard reads the note and deletes it, in the round trips it makes
anyway (eventbus/delivery/guards/effectlock.py): a delivery still costs two.

Best effort: when Redis cannot be reached either, the delivery is at least
once, as after a worker that dies between the effect and its entry (the
email's Message-ID is the same on every send).
"""

from __future__ import annotations

import logging

import redis

from eventbus.redis import client, key

log = logging.getLogger(__name__)

# As the attempt counts (eventbus/delivery/guards/attempts.py): longer than any retry schedule.
TTL_SECONDS = 7 * 24 * 3600


def key_of(subscriber: str, event_id: object) -> str:
    return key("unrecorded", subscriber, str(event_id))


def note(event_id: object, subscriber: str) -> None:
    """The effect happened and its ledger entry was not written."""
    try:
        client().set(key_of(subscriber, event_id), "1", ex=TTL_SECONDS)
    except redis.RedisError as exc:
        log.warning("effect of %s for %s not noted as done (it may happen again): %s", event_id, subscriber, exc)
