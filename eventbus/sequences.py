"""Per-aggregate sequence numbers, handed out inside the producer's transaction."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F

from eventbus.models import AggregateSequence


def next_sequence(aggregate: str) -> int:
    """The next number for ``aggregate``: 1, 2, 3, ... with no gaps among committed events.

    The UPDATE takes the row's lock until the caller's transaction ends, which
    orders concurrent publishers of the same aggregate.
    """
    with transaction.atomic():
        updated = AggregateSequence.objects.filter(aggregate=aggregate).update(last_sequence=F("last_sequence") + 1)
        if not updated:
            try:
                with transaction.atomic():
                    AggregateSequence.objects.create(aggregate=aggregate, last_sequence=1)
                return 1
            except IntegrityError:
                # Another transaction created it first; take the next number after theirs.
                AggregateSequence.objects.filter(aggregate=aggregate).update(last_sequence=F("last_sequence") + 1)
        return AggregateSequence.objects.values_list("last_sequence", flat=True).get(aggregate=aggregate)
