"""INSERTs of model rows on the consumers' hot path, their SQL made once per database.

A delivery writes one or two rows (a ledger entry, an analytics row, Celery's
result row); through the ORM each would be a model instance, an insert
compiler and a fresh SQL string. An ``Insert`` writes the row
``Model.save()`` (or ``bulk_create``) writes: every concrete column but an
auto-incremented key, each value converted by its own field's
``get_db_prep_save``; a column the row does not give takes its field's
default (prepared once per database when it is a constant) or, for
``auto_now``/``auto_now_add``, the current time, as ``pre_save`` sets it. The
SQL text is cached per database alias and number of rows.
No signals are sent and no instance is built (none of these models has
receivers). tests/fastpath/test_inserts.py compares the rows with the ORM's on SQLite
and PostgreSQL.

Buys: figure 1, the ledger's INSERT 941 -> 446 µs per delivery under cProfile; on the figure only with levers
18 to 26, 0.39x -> 0.62x (lever 19, docs/benchmarks-levers.md#the-fast-path-module-by-module).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connections, models
from django.db.models.constants import OnConflict
from django.utils import timezone


class Insert:
    """``INSERT INTO <model's table> (...) VALUES (...), ...`` for rows given as ``{field name: value}``.

    ``upsert=(unique, updated)``: on a conflict on the ``unique`` fields,
    update the ``updated`` ones (``ON CONFLICT ... DO UPDATE``, as
    ``bulk_create(update_conflicts=True)`` writes it); a row that exists keeps
    every other column.
    """

    def __init__(self, model: type[models.Model], *, upsert: tuple[Sequence[str], Sequence[str]] | None = None) -> None:
        self.model = model
        self.fields: tuple[models.Field[Any, Any], ...] = tuple(
            field
            for field in model._meta.concrete_fields
            if not (field.primary_key and isinstance(field, models.AutoField))
        )
        by_name = {field.name: field for field in self.fields}
        # Set to the current time on every insert, whatever the row says, as pre_save(add=True) does.
        self._now = frozenset(
            name
            for name, field in by_name.items()
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        )
        self._per_row_default = frozenset(
            name for name, field in by_name.items() if field.has_default() and callable(field.default)
        )
        self._upsert: tuple[list[str], list[str]] | None = None
        if upsert is not None:
            unknown = [name for name in (*upsert[0], *upsert[1]) if name not in by_name]
            if unknown:
                raise ValueError(f"{model.__name__} has no columns {unknown} to upsert on")
            self._upsert = ([by_name[n].column for n in upsert[0]], [by_name[n].column for n in upsert[1]])
        self._constants: dict[str, dict[str, Any]] = {}
        # Per database and row count; batches of many sizes keep only the recent ones.
        self._sql = functools.lru_cache(maxsize=256)(self._make_sql)

    def rows(self, rows: Sequence[Mapping[str, Any]], using: str = "default") -> None:
        """Insert ``rows`` in one statement; raises what the database raises (IntegrityError on a duplicate)."""
        if not rows:
            return
        connection = connections[using]
        constants = self._constants.get(using) or self._prepare_constants(using)
        now = timezone.now() if self._now else None
        params: list[Any] = []
        for row in rows:
            for field in self.fields:
                name = field.name
                if name in self._now:
                    value = now
                elif name in row:
                    value = row[name]
                elif name in self._per_row_default:
                    value = field.get_default()
                else:
                    params.append(constants[name])
                    continue
                params.append(field.get_db_prep_save(value, connection))
        with connection.cursor() as cursor:
            cursor.execute(self._sql(using, len(rows)), params)

    def row(self, row: Mapping[str, Any], using: str = "default") -> None:
        """``rows`` for one row."""
        self.rows([row], using)

    def _prepare_constants(self, using: str) -> dict[str, Any]:
        """Every column's default that is a constant, prepared once per database (``''``, ``None``, ``'pending'``)."""
        connection = connections[using]
        skip = self._now | self._per_row_default
        constants = {
            field.name: field.get_db_prep_save(field.get_default(), connection)
            for field in self.fields
            if field.name not in skip
        }
        self._constants[using] = constants
        return constants

    def _make_sql(self, using: str, count: int) -> str:
        connection = connections[using]
        quote = connection.ops.quote_name
        columns = ", ".join(quote(field.column) for field in self.fields)
        one = "(" + ", ".join(["%s"] * len(self.fields)) + ")"
        sql = f"INSERT INTO {quote(self.model._meta.db_table)} ({columns}) VALUES {', '.join([one] * count)}"
        if self._upsert is not None:
            unique, updated = self._upsert
            suffix = connection.ops.on_conflict_suffix_sql(self.fields, OnConflict.UPDATE, updated, unique)
            sql = f"{sql} {suffix}"
        return sql
