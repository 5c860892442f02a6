"""The outbox's two statements on the request path, compiled once per database instead of once per event.

Every sign-up writes its outbox row (``publish``, ``insert`` here) and, after
the commit, marks it dispatched (``fanout.mark_dispatched``, whose UPDATE is made here).
The SQL text of each is made once per database connection alias from the
model's own fields (column names, quoting and placeholders as Django writes
them), and each call converts only the values that need it, with the fields'
own ``get_db_prep_save`` (a new row's defaults once per database): the same
rows, the same values as the ORM's, on SQLite and PostgreSQL alike
(tests/fastpath/test_outbox_statements.py compares them with the ORM's).

Buys: figure Pa, 1.35x -> 0.72x (lever 7; lever 14 shortens the INSERT inside figure 4's write lock;
docs/benchmarks-levers.md#the-fast-path-module-by-module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connections
from django.db.models import Field
from django.utils import timezone

from eventbus.models import OutboxEvent

_META = OutboxEvent._meta
_TABLE_FIELDS: tuple[Field[Any, Any], ...] = tuple(_META.concrete_fields)
_FIELD = {field.name: field for field in _TABLE_FIELDS}

#: What the dispatched mark sets, in order; dispatch_attempts is incremented in SQL.
_MARKED = (
    "status",
    "dispatched_at",
    "deferred_subscribers",
    "last_error",
    "lease_owner",
    "lease_until",
    "sent_to",
    "last_sent_at",
    "settled_at",
)


@cache
def _insert_sql(alias: str) -> str:
    quote = connections[alias].ops.quote_name
    columns = ", ".join(quote(field.column) for field in _TABLE_FIELDS)
    placeholders = ", ".join(["%s"] * len(_TABLE_FIELDS))
    return f"INSERT INTO {quote(_META.db_table)} ({columns}) VALUES ({placeholders})"


@cache
def _mark_sql(alias: str, rows: int) -> str:
    quote = connections[alias].ops.quote_name
    sets = [f"{quote(_FIELD[name].column)} = %s" for name in _MARKED]
    attempts = quote(_FIELD["dispatch_attempts"].column)
    sets.append(f"{attempts} = {attempts} + 1")
    ids = ", ".join(["%s"] * rows)
    return (
        f"UPDATE {quote(_META.db_table)} SET {', '.join(sets)} "
        f"WHERE {quote(_FIELD['id'].column)} IN ({ids}) AND NOT ({quote(_FIELD['status'].column)} = %s)"
    )


#: The columns of a new row that come from its event; every other column starts at its default.
EVENT_COLUMNS = (
    "id",
    "type",
    "version",
    "aggregate",
    "sequence",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "payload",
)
#: The event columns whose values the database driver takes as they are (str, int, None), so
#: that their fields' get_db_prep_save would hand them back unchanged.
_PLAIN = frozenset({"type", "version", "aggregate", "sequence", "correlation_id", "causation_id"})


@cache
def _defaults(alias: str) -> dict[str, Any]:
    """The prepared default of every column a new row does not get from its event (created_at aside).

    Computed once per database by the fields themselves: ``status`` 'pending',
    the empty lists of the JSON columns, 0 attempts, NULL times.
    """
    connection = connections[alias]
    return {
        field.name: field.get_db_prep_save(field.get_default(), connection)
        for field in _TABLE_FIELDS
        if field.name not in EVENT_COLUMNS and field.name != "created_at"
    }


def insert(event: Mapping[str, Any], using: str = "default") -> None:
    """INSERT a new outbox row with the ``EVENT_COLUMNS`` in ``event``: the row
    ``OutboxEvent.objects.create(**event)`` writes, without a model instance or signals.

    Only the id, the times and the payload go through their fields' conversion
    (a UUID, a datetime and JSON, which each database spells its own way); the
    defaults were converted once (``_defaults``).
    """
    connection = connections[using]
    defaults = _defaults(using)
    params = []
    for field in _TABLE_FIELDS:
        name = field.name
        if name in _PLAIN:
            params.append(event[name])
        elif name in defaults:
            params.append(defaults[name])
        elif name == "created_at":
            params.append(field.get_db_prep_save(timezone.now(), connection))
        else:
            params.append(field.get_db_prep_save(event[name], connection))
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(using), params)


def mark_dispatched(ids: Sequence[str], sent_to: list[str], now: datetime, using: str = "default") -> None:
    """``fanout.mark_dispatched``'s UPDATE of rows sent to every one of their subscribers (``sent_to``)."""
    if not ids:
        return
    connection = connections[using]
    values = {
        "status": OutboxEvent.Status.DISPATCHED.value,
        "dispatched_at": now,
        "deferred_subscribers": [],
        "last_error": "",
        "lease_owner": "",
        "lease_until": None,
        "sent_to": list(sent_to),
        "last_sent_at": now if sent_to else None,
        # Nothing was sent (every subscriber shed): no delivery to reconcile.
        "settled_at": None if sent_to else now,
    }
    params = [_FIELD[name].get_db_prep_save(values[name], connection) for name in _MARKED]
    params += [_FIELD["id"].get_db_prep_save(event_id, connection) for event_id in ids]
    params.append(OutboxEvent.Status.DISPATCHED.value)
    with connection.cursor() as cursor:
        cursor.execute(_mark_sql(using, len(ids)), params)
