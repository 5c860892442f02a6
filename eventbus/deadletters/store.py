"""Writing a dead letter to the database: idempotent, so a redelivered failure keeps one row."""

from __future__ import annotations

from eventbus.deadletters.failure import DeadLetterFailure
from eventbus.models import DeadLetter


def store(failure: DeadLetterFailure) -> tuple[DeadLetter, bool]:
    """Store ``failure`` as a DeadLetter row; returns the row and whether it was new.

    The row's id is the failure's deterministic id: the second store of the
    same failure (a redelivered ``dead_letter`` message, or the broker path and
    the database fallback both succeeding) finds the first row and changes nothing.
    """
    # get_or_create retries the read on IntegrityError, so two concurrent stores
    # of one failure end with one row and no error.
    return DeadLetter.objects.get_or_create(
        id=failure.id,
        defaults={
            "kind": failure.kind.value,
            "event_id": failure.event_id,
            "event_type": failure.event_type,
            "subscriber": failure.subscriber,
            "task_name": failure.task_name,
            "task_id": failure.task_id,
            "queue": failure.queue,
            "body": failure.body,
            # Postgres text cannot hold NUL; a pickled or binary body may contain it.
            "raw_body": (failure.raw_body or "").replace("\x00", "\\x00"),
            "body_length": failure.body_length,
            "body_sha256": failure.body_sha256,
            "exception_type": failure.exception_type,
            "exception_message": failure.exception_message,
            "traceback": failure.traceback,
            "attempts": failure.attempts,
            "first_failed_at": failure.first_failed_at,
            "last_failed_at": failure.last_failed_at,
        },
    )
