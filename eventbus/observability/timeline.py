"""Writing the unusual steps of a delivery (retries, waits, dead letters...) as DeliveryStep rows.

Best effort: a step that cannot be written is logged, never a reason to fail
the delivery it describes.
"""

from __future__ import annotations

import logging

from eventbus.models import DeliveryStep

log = logging.getLogger(__name__)

Step = DeliveryStep.Step


def note(event_id: object, subscriber: str, step: str, detail: str = "", task_id: str = "", worker: str = "") -> None:
    try:
        DeliveryStep.objects.create(
            event_id=event_id,
            subscriber=subscriber,
            step=step,
            detail=detail[:2000],
            task_id=task_id or "",
            worker=worker or "",
        )
    except Exception as exc:  # the database's errors are many; a missing step is not worth a failure
        log.warning("timeline step %s of %s for %s not written: %s", step, event_id, subscriber, exc)
