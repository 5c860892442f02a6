"""The telemetry consumer: readings folded into per-minute rollups, many events per transaction."""

from __future__ import annotations

from django.db import OperationalError

from eventbus import Envelope, RetryPolicy, subscriber
from project import queues
from telemetry.rollup import fold


@subscriber(
    "telemetry.readings_received",
    name="telemetry.rollup",
    queue=queues.TELEMETRY,
    label="rollup",
    done_label="rolled up",
    # Critical: a 202 promised the readings; above the high-water mark the
    # API refuses new batches (429) and dispatch holds the accepted ones in
    # the outbox, so none is dropped.
    critical=True,
    # A locked or briefly unreachable database is waited out; a reading that
    # cannot be folded (PoisonMessage) is permanent and goes to dead letters.
    retry=RetryPolicy(transient=(OperationalError,)),
    # Each event already carries up to 500 readings; 50 events per upsert
    # round and transaction (eventbus/delivery/batch.py).
    batch=50,
)
def rollup(events: list[Envelope]) -> None:
    """Fold each event's readings into its buckets once: the ledger entry commits with the upsert."""
    fold(events)
