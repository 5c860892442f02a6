"""Per-aggregate sequence numbers, handed out inside the producer's transaction."""

from __future__ import annotations

from django.db import connections

from eventbus.models import AggregateSequence

_TABLE = AggregateSequence._meta.db_table


def next_sequence(aggregate: str, using: str = "default") -> int:
    """The next number for ``aggregate``: 1, 2, 3, ... with no gaps among committed events.

    One statement, an upsert that returns the new value (SQLite 3.35+ and
    PostgreSQL both speak it): it runs on the publish path of every request.
    The row it writes stays locked until the caller's transaction ends, which
    orders concurrent publishers of the same aggregate; a rollback gives the
    number back.
    """
    connection = connections[using]
    table = connection.ops.quote_name(_TABLE)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (aggregate, last_sequence) VALUES (%s, 1) "
            f"ON CONFLICT (aggregate) DO UPDATE SET last_sequence = {table}.last_sequence + 1 "
            "RETURNING last_sequence",
            [aggregate],
        )
        return int(cursor.fetchone()[0])
