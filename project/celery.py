"""The Celery application, configured the standard way.

Settings come from Django's settings under the ``CELERY_`` namespace; tasks
are discovered in every installed app; logging follows Django's ``LOGGING``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The event bus connects its own hooks (tracing, connection reuse, the start
# check) when Django sets up its app (eventbus/signals.py).


@setup_logging.connect
def configure_logging(**_: Any) -> None:
    """Let Django's LOGGING configure the worker's logging, not Celery's defaults."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@task_prerun.connect
def record_queue_in_result(task: Any = None, **_: Any) -> None:
    """Store the queue a task came from with its result (django-celery-results keeps
    ``request.meta`` in TaskResult.meta), beside the name and arguments it already keeps."""
    if task is None:
        return
    delivery = task.request.delivery_info or {}
    meta = dict(getattr(task.request, "meta", None) or {})
    meta["queue"] = delivery.get("routing_key") or delivery.get("queue") or ""
    task.request.meta = meta
