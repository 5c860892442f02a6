"""Housekeeping tasks of the event bus, run by beat on the ``eventbus`` queue."""

from __future__ import annotations

from celery import shared_task

from eventbus.relay import relay


@shared_task(name="eventbus.relay_outbox", ignore_result=True)
def relay_outbox() -> int:
    """Send what the on-commit dispatch could not. Safe to run several at once."""
    return relay().dispatched
