"""``publish()``: the one way producers emit an event (the transactional outbox).

The event is written as an OutboxEvent row in the caller's transaction and
sent to the broker only after that transaction commits. A rolled-back
transaction sends nothing; a committed one is never lost, because a row the
on-commit dispatch could not send stays pending for the relay.
"""

from __future__ import annotations

import uuid
from functools import partial

from django.db import transaction
from django.utils import timezone

from eventbus.contract import catalogue
from eventbus.contract.envelope import Envelope
from eventbus.fastpath import statements
from eventbus.observability.context import get_correlation_id, new_correlation_id
from eventbus.outbox.fanout import dispatch_after_commit
from eventbus.outbox.sequences import next_sequence


def publish(
    payload: object,
    *,
    aggregate: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    using: str = "default",
) -> Envelope:
    """Write ``payload`` (an ``@event_type`` dataclass) to the outbox; dispatch it on commit.

    Call it inside the transaction that makes the change the event reports.
    Returns the envelope, whose ``id`` identifies the event everywhere.
    """
    declared = catalogue.for_payload(payload)
    # No savepoint: if writing the event fails, the caller's transaction must
    # fail with it (the change and its event commit together or not at all).
    with transaction.atomic(using=using, savepoint=False):
        envelope = Envelope(
            id=uuid.uuid4(),
            type=declared.name,
            version=declared.version,
            occurred_at=timezone.now(),
            aggregate=aggregate,
            sequence=next_sequence(aggregate, using),
            correlation_id=correlation_id or get_correlation_id() or new_correlation_id(),
            causation_id=causation_id,
            payload=payload,
        )
        wire = envelope.to_dict()
        # One prepared INSERT (eventbus/fastpath/statements.py): the row create() would write.
        statements.insert(
            {
                "id": envelope.id,
                "type": envelope.type,
                "version": envelope.version,
                "aggregate": envelope.aggregate,
                "sequence": envelope.sequence,
                "occurred_at": envelope.occurred_at,
                "correlation_id": envelope.correlation_id,
                "causation_id": envelope.causation_id,
                "payload": wire["payload"],
            },
            using,
        )
        transaction.on_commit(partial(dispatch_after_commit, wire), using=using)
    return envelope
