"""Housekeeping tasks of the event bus, run by beat on the ``eventbus`` queue."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from eventbus.outbox.relay import relay

# The database away (stopped, restarting, failing over): the run ends and the next one, a few seconds
# later, carries on. Celery logs an exception in ``throws`` as one INFO line ("raised expected"), not an
# ERROR with its traceback per run for as long as the outage lasts.
DATABASE_AWAY = (OperationalError, InterfaceError)


@shared_task(name="eventbus.relay_outbox", ignore_result=True, throws=DATABASE_AWAY)
def relay_outbox() -> int:
    """Send what the on-commit dispatch could not. Safe to run several at once."""
    return relay().dispatched


@shared_task(name="eventbus.reconcile_deliveries", ignore_result=True, throws=DATABASE_AWAY)
def reconcile_deliveries() -> int:
    """Send again the deliveries the broker lost (see eventbus/operations/reconcile.py); returns how many."""
    from eventbus.operations import brokerwatch
    from eventbus.operations.reconcile import reconcile

    brokerwatch.check()
    return reconcile().redelivered


@shared_task(name="eventbus.watch_broker", ignore_result=True, throws=DATABASE_AWAY)
def watch_broker() -> int:
    """Tell whether the broker lost its data since the last check; if so, send again what it lost at once."""
    from eventbus.operations import brokerwatch
    from eventbus.operations.reconcile import reconcile

    if brokerwatch.check() is None:
        return 0
    return reconcile().redelivered


# --- Dead letters -------------------------------------------------------------

import logging  # noqa: E402 -- the dead-letter tasks start here

from django.conf import settings  # noqa: E402
from django.db import DatabaseError  # noqa: E402

from eventbus.deadletters.failure import DeadLetterFailure  # noqa: E402

log = logging.getLogger(__name__)


# No queue= here (a deprecated task attribute): send_to_dead_letter names the
# dead_letter queue, and beat names the eventbus queue for the purge.
@shared_task(
    name="eventbus.store_dead_letter",
    ignore_result=True,
    # At least once: acknowledged after the row is written; a worker dying
    # mid-store leaves the message for the next. The store is idempotent.
    acks_late=True,
    reject_on_worker_lost=True,
    # A locked or unreachable database is waited out, with backoff capped well
    # below the broker's visibility timeout; a dead letter is not given up lightly.
    autoretry_for=(DatabaseError,),
    retry_backoff=2,
    retry_backoff_max=300,
    max_retries=100,
)
def store_dead_letter(wire: dict[str, object]) -> None:
    """Store one dead letter sent by ``send_to_dead_letter``; storing it twice keeps one row."""
    from eventbus.deadletters.store import store

    try:
        failure = DeadLetterFailure.from_wire(wire)
    except (KeyError, TypeError, ValueError) as exc:
        # Our own message, malformed: retrying cannot help. Keep it in the log.
        log.critical("malformed dead-letter message (%s), not stored: %r", exc, wire)
        return
    row, created = store(failure)
    log.info("dead letter %s %s (%s, %s)", row.id, "stored" if created else "already stored", row.kind, row.reason)


@shared_task(name="eventbus.purge_dead_letters", ignore_result=True)
def purge_dead_letters() -> int:
    """Delete dead letters whose last failure is older than EVENTBUS_DEADLETTER_RETENTION_DAYS."""
    from eventbus.deadletters.operations import purge_older_than

    return purge_older_than(settings.EVENTBUS_DEADLETTER_RETENTION_DAYS)


# --- Retention ----------------------------------------------------------------


@shared_task(name="eventbus.purge_expired", ignore_result=True)
def purge_expired() -> int:
    """Delete the rows every registered table keeps no longer (operations/retention.py), bounded; returns how many."""
    from eventbus.operations import retention

    return sum(retention.purge_expired().values())
