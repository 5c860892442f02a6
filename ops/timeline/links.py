"""Where to look at a task or a search: the TaskResult admin, Flower, the events page."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse
from django_celery_results.models import TaskResult


def as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def search_url(query: str) -> str:
    """The events search page for ``query`` (a request id, an aggregate...)."""
    return f"{reverse('ops:events')}?{urlencode({'q': query})}"


def flower_url(task_id: str) -> str:
    return f"{settings.FLOWER_URL.rstrip('/')}/task/{task_id}"


@dataclass(frozen=True)
class TaskRef:
    """One Celery task that carried the event, and where to look at it."""

    task_id: str
    admin_url: str
    """The TaskResult's admin change page when a result is stored, else the changelist filtered by task id."""
    flower_url: str
    status: str = ""
    """The stored result's state (SUCCESS, RETRY...); blank when none is stored (yet, or any more)."""
    worker: str = ""
    date_done: datetime | None = None


def task_refs(task_ids: Iterable[str]) -> dict[str, TaskRef]:
    """A TaskRef per non-blank task id, with the stored result's state where there is one (one query)."""
    wanted = sorted({t for t in task_ids if t})
    stored = TaskResult.objects.filter(task_id__in=wanted).only("task_id", "status", "worker", "date_done")
    results = {r.task_id: r for r in stored} if wanted else {}
    changelist = reverse("admin:django_celery_results_taskresult_changelist")
    refs = {}
    for task_id in wanted:
        result = results.get(task_id)
        if result is None:
            refs[task_id] = TaskRef(task_id, f"{changelist}?{urlencode({'task_id': task_id})}", flower_url(task_id))
        else:
            refs[task_id] = TaskRef(
                task_id,
                reverse("admin:django_celery_results_taskresult_change", args=[result.pk]),
                flower_url(task_id),
                status=result.status,
                worker=result.worker or "",
                date_done=result.date_done,
            )
    return refs
