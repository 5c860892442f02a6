"""The bus's hooks into Celery, connected by its app's ``ready()`` in every process that sets up Django.

- the correlation id in every task's headers and every worker log line
  (eventbus/observability/tracing.py);
- database connections reused across tasks within CONN_MAX_AGE when the host
  sets CELERY_DB_REUSE_MAX (eventbus/fastpath/dbconnections.py);
- each worker's progress (started, its queues, its last finished task) for the
  stall check (eventbus/observability/progress.py);
- a worker with settings that lose or duplicate messages does not start
  (eventbus/operations/checks.py).

A worker sets up Django (Celery's Django fix-up, on ``import_modules``) before
it sends ``worker_init``, so the last one is connected in time.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from celery.signals import task_postrun, task_prerun, worker_init

from eventbus.observability import progress, tracing


def connect() -> None:
    """Connect every hook (idempotent: each has a dispatch_uid)."""
    tracing.connect()
    progress.connect()
    task_prerun.connect(tidy_database_connections, weak=False, dispatch_uid="eventbus.signals.tidy.prerun")
    task_postrun.connect(tidy_database_connections, weak=False, dispatch_uid="eventbus.signals.tidy.postrun")
    worker_init.connect(refuse_unsafe_settings, weak=False, dispatch_uid="eventbus.signals.refuse_unsafe")


def tidy_database_connections(**_: Any) -> None:
    """Reuse database connections across tasks within CONN_MAX_AGE (eventbus/fastpath/dbconnections.py)."""
    from django.conf import settings

    if getattr(settings, "CELERY_DB_REUSE_MAX", None):
        from eventbus.fastpath import dbconnections

        dbconnections.tidy()


def refuse_unsafe_settings(sender: Any = None, **_: Any) -> None:
    """A worker with settings that lose or duplicate messages does not start (eventbus/operations/checks.py)."""
    from eventbus.operations.checks import refuse_unsafe
    from eventbus.operations.declarations import refuse_mismatched_declarations

    app = getattr(sender, "app", None) or current_app
    refuse_unsafe(app.conf)
    refuse_mismatched_declarations(app)
