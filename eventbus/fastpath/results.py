"""Celery's result rows (django-celery-results), written in one statement each.

django-celery-results stores a task's state with ``get_or_create`` and, when
the row exists, a ``save``: a SELECT, a savepoint, an INSERT (or an UPDATE)
for every task, all inside a transaction. This backend writes the same row
with one ``INSERT ... ON CONFLICT (task_id) DO UPDATE``, its SQL made once
(eventbus/fastpath/inserts.py): the same columns, the same values, visible in admin as
before; a row written twice (a retry's ``RETRY`` then its ``SUCCESS``) keeps
its ``date_created`` and takes the newer state, as ``get_or_create`` +
``save`` did.

A ``SUCCESS`` row is not written by the task itself: with
``EVENTBUS_RESULT_BATCH_SECONDS`` above 0 (0.2 s by default) the pool
process's gatherer (eventbus/fastpath/gatherer.py) writes every row of the last 0.2 s
in one upsert, from a thread, so a welcome email does not wait for a second
statement and commit of its own. The row shows up that much later in admin,
its ``date_done`` is the time it was written, and a pool process killed
meanwhile loses those rows: never a delivery, whose record is its ledger row.
Other states (``RETRY``, ``FAILURE``) are written at once: a retry's
``SUCCESS``, gathered, then always lands after them and wins.

Settings: ``CELERY_RESULT_BACKEND = "eventbus.fastpath.results:UpsertDatabaseBackend"``
in place of ``"django-db"``; every other result setting applies unchanged.

Buys: figure 1, a task's result row 1,089 -> 198 µs under cProfile; on the figure only with levers 18 to 26,
0.39x -> 0.62x (levers 2 and 24, docs/benchmarks-levers.md#the-fast-path-module-by-module).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import states
from django.conf import settings
from django.db import router
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from eventbus.fastpath.gatherer import Gatherer
from eventbus.fastpath.inserts import Insert

log = logging.getLogger(__name__)

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
# Rows per statement when the gatherer writes: 14 columns each, well under either database's parameter limit.
_CHUNK = 500


def _write(rows: list[tuple[str, dict[str, Any]]]) -> None:
    """The gathered ``(database, row)`` pairs, in one upsert per database and chunk; a task's last row wins."""
    latest: dict[str, dict[str, dict[str, Any]]] = {}
    for using, row in rows:
        latest.setdefault(using, {})[row["task_id"]] = row
    for using, by_task in latest.items():
        pending = list(by_task.values())
        for start in range(0, len(pending), _CHUNK):
            _UPSERT.rows(pending[start : start + _CHUNK], using=using)


GATHERED = Gatherer(
    "eventbus-results", _write, failure="those tasks have no result row (each delivery's ledger row stands)"
)
GATHERED.flush_on_exit()


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
        # (eventbus/fastpath/inserts.py), without bulk_create's transaction around it
        # (BEGIN, COMMIT: two statements more): a single INSERT is atomic by
        # itself. date_done (auto_now) and date_created (auto_now_add) are
        # filled in as any INSERT fills them; the update keeps date_created.
        values = {
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
        }
        database = using or router.db_for_write(TaskResult)
        if status == states.SUCCESS and settings.EVENTBUS_RESULT_BATCH_SECONDS > 0:
            GATHERED.add([(database, values)], settings.EVENTBUS_RESULT_BATCH_SECONDS)
        else:
            _UPSERT.row(values, using=database)
        return result

    def cleanup(self) -> None:
        """``celery.backend_cleanup``: delete the rows older than ``result_expires``, in bounded chunks.

        django-celery-results deletes every expired row in one DELETE inside one
        transaction: a day of results (a row per delivery) at once, holding its
        locks as long as that takes. Here it is eventbus/operations/retention.py's bounded
        purge (``CHUNK`` rows a transaction, ``MAX_CHUNKS`` a run); beat runs
        this every ten minutes (eventbus/celery_settings.py), so each run has little to do.
        """
        if not self.expires:
            return
        from eventbus.operations.retention import delete_in_chunks

        expires = timedelta(seconds=self.expires)  # seconds: Celery's prepare_expires turned a timedelta into them
        deleted = delete_in_chunks(lambda: TaskResult.objects.filter(date_done__lt=timezone.now() - expires))
        # Group results: the project makes none; Celery's own expiry for any there are.
        self.GroupModel._default_manager.delete_expired(self.expires)
        if deleted:
            log.info("celery.backend_cleanup: deleted %d result rows older than %s", deleted, expires)
