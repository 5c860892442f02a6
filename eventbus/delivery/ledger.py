"""The processed-event ledger: claim (event, subscriber) once, inside the effect's transaction."""

from __future__ import annotations

import contextlib
from functools import cache, lru_cache
from typing import Any

from django.db import IntegrityError, connections, transaction

from eventbus.contract.envelope import Envelope
from eventbus.contract.registry import Subscription
from eventbus.fastpath.inserts import Insert
from eventbus.models import ProcessedEvent


def _columns(
    event: Envelope, subscriber: str, task_id: str, worker: str, runtime_ms: float | None = None
) -> dict[str, object]:
    """The ledger row's values (the rest are defaults: outcome processed, processed_at now)."""
    return {
        "event_id": event.id,
        "subscriber": subscriber,
        "event_type": event.type,
        "aggregate": event.aggregate,
        "sequence": event.sequence,
        "task_id": task_id or "",
        "worker": worker or "",
        "runtime_ms": runtime_ms,
    }


#: The ledger's INSERT for ``record`` and ``claim_many``, compiled once per database.
_ROWS = Insert(ProcessedEvent)


def claim(event: Envelope, subscriber: str, task_id: str = "", worker: str = "") -> int | None:
    """Record that ``subscriber`` handles ``event``; returns the entry's id, or None when it already has.

    Call it inside the transaction that holds the effect: if the effect fails,
    the claim rolls back with it. A concurrent duplicate waits on the unique
    index until this transaction ends, then sees the row and backs off.
    """
    try:
        with transaction.atomic():
            entry = ProcessedEvent(**_columns(event, subscriber, task_id, worker))
            entry.save(force_insert=True)
    except IntegrityError:
        return None
    return int(entry.pk)


def record(event: Envelope, subscriber: str, task_id: str, worker: str, runtime_ms: float) -> bool:
    """Record an effect that happened outside the database; returns False when the entry already exists.

    One INSERT, in no transaction of the caller's (the effect is done: there
    is nothing to commit with it), with the run time already known: what
    ``claim`` and ``record_runtime`` write, in one statement instead of a
    transaction, a savepoint and two; the SQL made once (eventbus/fastpath/inserts.py).
    """
    # Called inside a transaction after all (a test's), a savepoint keeps a
    # duplicate's IntegrityError from breaking the caller's transaction.
    guard = transaction.atomic() if transaction.get_connection().in_atomic_block else contextlib.nullcontext()
    try:
        with guard:
            _ROWS.row(_columns(event, subscriber, task_id, worker, runtime_ms))
    except IntegrityError:
        return False
    return True


def record_runtime(entry_id: int, runtime_ms: float) -> None:
    """Note how long the effect took, in the same transaction as the claim."""
    ProcessedEvent.objects.filter(pk=entry_id).update(runtime_ms=runtime_ms)


def claim_many(
    events: list[tuple[Envelope, str]], subscriber: str, worker: str = "", runtime_ms: float | None = None
) -> None:
    """``claim`` for many ``(event, task id)`` at once, in one INSERT; raises IntegrityError if any was claimed.

    Call it inside the transaction that holds the effects, after
    ``processed_ids`` found none of them: a concurrent duplicate makes the
    whole transaction fail, and its caller handles the events one by one.
    ``runtime_ms``: each entry's run time, when the effects are done already.
    """
    _ROWS.rows([_columns(event, subscriber, task_id, worker, runtime_ms) for event, task_id in events])


def processed_ids(event_ids: list[object], subscriber: str) -> set[object]:
    """Of ``event_ids``, those the subscriber has handled (``has_processed`` for many, in one query)."""
    if not event_ids:
        return set()
    return set(
        ProcessedEvent.objects.filter(subscriber=subscriber, event_id__in=event_ids).values_list("event_id", flat=True)
    )


def has_processed(event_id: object, subscriber: str) -> bool:
    """True once the subscriber handled the event (or dispatch shed it for that subscriber).

    Asked before every delivery: one prepared ``SELECT 1 ... LIMIT 1`` on the
    unique index, the SQL made once, not a queryset compiled per call.
    """
    connection = connections["default"]
    with connection.cursor() as cursor:
        params = [_EVENT_ID.get_db_prep_value(event_id, connection), subscriber]
        cursor.execute(_processed_sql(connection.alias), params)
        return cursor.fetchone() is not None


_EVENT_ID = ProcessedEvent._meta.get_field("event_id")


@cache
def _processed_sql(alias: str) -> str:
    quote = connections[alias].ops.quote_name
    meta = ProcessedEvent._meta
    event_id, subscriber = (quote(meta.get_field(name).column) for name in ("event_id", "subscriber"))
    return f"SELECT 1 FROM {quote(meta.db_table)} WHERE {event_id} = %s AND {subscriber} = %s LIMIT 1"


def history(events: list[Envelope], subscription: Subscription) -> list[tuple[object, str, int]]:
    """The subscriber's ledger rows ``(event id, aggregate, sequence)`` of these events' aggregates
    and of the events themselves, in one query: what ``in_order_many`` and the duplicate guard of a
    batch both need (eventbus/delivery/guards/).

    The ORM's query (``subscriber = %s AND (aggregate IN (...) OR event_id IN (...))``),
    its SQL made once per database and batch shape: compiling the queryset cost a batch of
    one about ten times what the database took to answer it (figure 1, docs/benchmarks.md).
    """
    if not events:
        return []
    aggregates = list({event.aggregate: None for event in events})
    connection = connections["default"]
    params: list[Any] = [subscription.name, *aggregates]
    params += [_EVENT_ID.get_db_prep_value(event.id, connection) for event in events]
    with connection.cursor() as cursor:
        cursor.execute(_history_sql(connection.alias, len(aggregates), len(events)), params)
        rows = cursor.fetchall()
    return [(_EVENT_ID.to_python(event_id), aggregate, int(sequence)) for event_id, aggregate, sequence in rows]


_EVENT_ID = ProcessedEvent._meta.get_field("event_id")


@lru_cache(maxsize=512)
def _history_sql(alias: str, aggregates: int, ids: int) -> str:
    quote = connections[alias].ops.quote_name
    meta = ProcessedEvent._meta
    event_id, aggregate, sequence, subscriber = (
        quote(meta.get_field(name).column) for name in ("event_id", "aggregate", "sequence", "subscriber")
    )
    return (
        f"SELECT {event_id}, {aggregate}, {sequence} FROM {quote(meta.db_table)} "
        f"WHERE {subscriber} = %s AND ({aggregate} IN ({', '.join(['%s'] * aggregates)}) "
        f"OR {event_id} IN ({', '.join(['%s'] * ids)}))"
    )
