"""Celery's result rows (django-celery-results), written in one statement each.

django-celery-results stores a task's state with ``get_or_create`` and, when
the row exists, a ``save``: a SELECT, a savepoint, an INSERT (or an UPDATE)
for every task, all inside a transaction. A worker delivering welcome emails
stores a ``SUCCESS`` row per task, so that was about 8% of a pool process's
time in figure 1 of docs/benchmarks.md. This backend writes the same row with
one ``INSERT ... ON CONFLICT (task_id) DO UPDATE``, its SQL made once
(eventbus/inserts.py): the same columns, the same values, visible in admin as
before; a row written twice (a retry's ``RETRY`` then its ``SUCCESS``) keeps
its ``date_created`` and takes the newer state, as ``get_or_create`` +
``save`` did.

Settings: ``CELERY_RESULT_BACKEND = "eventbus.results:UpsertDatabaseBackend"``
in place of ``"django-db"``; every other result setting applies unchanged.
"""

from __future__ import annotations

from typing import Any

from celery import states
from django.db import router
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from eventbus.inserts import Insert

# What a later state of the same task replaces; date_created stays the first write's.
_UPDATED = [
    "status",
    "result",
    "traceback",
    "meta",
    "content_encoding",
    "content_type",
    "periodic_task_name",
    "task_name",
    "task_args",
    "task_kwargs",
    "worker",
    "date_done",
]


_UPSERT = Insert(TaskResult, upsert=(["task_id"], _UPDATED))


class UpsertDatabaseBackend(DatabaseBackend):
    """django-celery-results' database backend, storing a state in one upsert instead of read-then-write."""

    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        if status == states.STARTED:
            # date_started is set by the database's clock (Now()); the project
            # does not store STARTED (CELERY_TASK_TRACK_STARTED is off).
            return super()._store_result(task_id, result, status, traceback, request, using)
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {**self._get_meta_from_request(request), "children": self.current_task_children(request)}
        _, _, encoded_meta = self.encode_content(meta)
        extended = self._get_extended_properties(request, traceback)
        # One INSERT ... ON CONFLICT (task_id) DO UPDATE, its SQL made once
        # (eventbus/inserts.py), without bulk_create's transaction around it
        # (BEGIN, COMMIT: two statements more): a single INSERT is atomic by
        # itself. date_done (auto_now) and date_created (auto_now_add) are
        # filled in as any INSERT fills them; the update keeps date_created.
        _UPSERT.row(
            {
                "task_id": task_id,
                "status": status,
                "result": encoded,
                "traceback": traceback,
                "meta": encoded_meta,
                "content_encoding": content_encoding,
                "content_type": content_type,
                "periodic_task_name": extended["periodic_task_name"],
                "task_name": extended["task_name"],
                "task_args": extended["task_args"],
                "task_kwargs": extended["task_kwargs"],
                "worker": extended["worker"],
            },
            using=using or router.db_for_write(TaskResult),
        )
        return result
