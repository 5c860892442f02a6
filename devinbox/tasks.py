"""The classroom's tasks, on the ``eventbus`` queue: the way back from a queue pause, and the analytics flood."""

from __future__ import annotations

from celery import shared_task

from devinbox import faults, flood, queuepause


@shared_task(name="devinbox.resume_queue", ignore_result=True)
def resume_queue(queue: str, workers: list[str]) -> None:
    """End a pause (devinbox/queuepause.py) when its time is up. Always allowed: it only heals."""
    queuepause.resume(queue, workers)


@shared_task(name="devinbox.flood_analytics", ignore_result=True)
def flood_analytics(count: int, request_id: str) -> int:
    """Publish a flood of analytics-only events (devinbox/flood.py); only with DJANGO_DEBUG on."""
    faults.require_debug()
    return flood.flood(count, request_id)
