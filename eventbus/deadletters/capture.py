"""Capturing a failure: hand it to the dead-letter queue, or store it directly if the broker refuses."""

from __future__ import annotations

import json
import logging

from celery import current_app
from django.conf import settings

from eventbus.deadletters.failure import DeadLetterFailure

log = logging.getLogger(__name__)

STORE_TASK = "eventbus.store_dead_letter"

# The failure path must not hang on a sick broker: a couple of quick tries,
# then the database fallback, which is just as good (the store is idempotent).
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.5}


class DeadLetterNotCaptured(Exception):
    """Neither the broker nor the database took the dead letter; the caller must not drop the message."""


def send_to_dead_letter(failure: DeadLetterFailure) -> None:
    """Make sure ``failure`` ends up as a DeadLetter row; never loses it silently.

    Publishes it to the dead-letter queue (EVENTBUS_DEAD_LETTER_QUEUE), where
    the ``eventbus.store_dead_letter`` task stores it (late ack: a worker dying mid-store leaves the message for
    the next). If the broker refuses, the row is written to the database right
    here. Both paths use the failure's deterministic id, so doing both, or
    either twice, leaves one row.

    Call it outside any transaction that may roll back (the fallback write
    would roll back with it). Raises :class:`DeadLetterNotCaptured` only when
    the broker and the database both failed; the failure is then logged in
    full, and the caller should leave the original message unacknowledged if
    it can.
    """
    wire = failure.to_wire()
    queue = settings.EVENTBUS_DEAD_LETTER_QUEUE
    try:
        current_app.send_task(
            STORE_TASK,
            args=(wire,),
            queue=queue,
            routing_key=queue,
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )
    except Exception as publish_error:  # the broker's errors are many and transport-specific
        log.warning(
            "dead letter %s (%s, %s): broker refused (%s: %s); storing it directly",
            wire["id"],
            failure.kind,
            failure.subscriber or failure.queue,
            type(publish_error).__name__,
            publish_error,
        )
        _store_directly(failure, wire, publish_error)
        return
    log.info("dead letter %s (%s, %s) sent to %s", wire["id"], failure.kind, failure.reason, queue)


def _store_directly(failure: DeadLetterFailure, wire: dict[str, object], publish_error: BaseException) -> None:
    from eventbus.deadletters.store import store  # imports models: only once Django is ready

    try:
        store(failure)
    except Exception as store_error:
        # The log is the last place the failure can live: write all of it there.
        log.critical(
            "dead letter %s NOT STORED: broker (%s) and database (%s: %s) both failed; full record: %s",
            wire["id"],
            publish_error,
            type(store_error).__name__,
            store_error,
            json.dumps(wire, default=str),
        )
        raise DeadLetterNotCaptured(str(wire["id"])) from store_error
    log.warning("dead letter %s stored directly in the database", wire["id"])
