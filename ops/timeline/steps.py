"""The steps of one delivery, in the order they happened, from the records about its event.

The usual path is read from the outbox (queued) and the ledger (succeeded);
every unusual step has a DeliveryStep row. Dead letters and replays stored
without their step (writing a step is best effort) still show.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.urls import reverse

from eventbus import ops_api
from eventbus.models import DeadLetter, DeliveryStep, OutboxEvent, ProcessedEvent
from ops.timeline.links import TaskRef
from ops.timeline.records import Records

# The consumer writes "<reason>; retry <n>/<max> in <countdown>s" (eventbus/delivery/consumer.py).
_RETRY = re.compile(r"^(?P<reason>.*); retry (?P<attempt>\d+)/(?P<max>\d+) in (?P<countdown>[\d.]+)s$", re.DOTALL)

Step = DeliveryStep.Step


@dataclass(frozen=True)
class TimelineStep:
    """One thing that happened on the event's way to one subscriber."""

    kind: str
    """``pending``, ``queued``, ``succeeded``, or a DeliveryStep step (``retried``, ``dead_lettered``...)."""
    title: str
    at: datetime | None
    """None when the records do not say when (e.g. a subscriber sent before another was deferred)."""
    detail: str = ""
    task: TaskRef | None = None
    worker: str = ""
    runtime_ms: float | None = None
    link_url: str = ""
    link_text: str = ""


# Steps written where events are dispatched; every other step is a consumer's, after the queueing.
_DISPATCH_SIDE = {"queued", Step.DEFERRED.value, Step.SHED.value}


def steps_for(event: OutboxEvent, name: str, records: Records) -> tuple[TimelineStep, ...]:
    """Subscriber ``name``'s steps for ``event``, oldest first.

    Guaranteed: "queued" comes before every step a consumer wrote (the outbox
    notes its time only after the broker took every message, so a quick worker
    may have started sooner); a shed delivery has no "queued"; a still
    pending event ends with "waiting in the outbox" and its last error.
    """
    own_steps = [s for s in records.steps if s.subscriber == name]
    entry = records.ledger.get(name)
    shed = (entry is not None and entry.outcome == ProcessedEvent.Outcome.SHED) or any(
        s.step == Step.SHED for s in own_steps
    )
    timed: list[TimelineStep] = [_from_delivery_step(s, records) for s in own_steps]
    timed += _unnoted_dead_letters(name, own_steps, records)
    timed += _unnoted_replays(name, own_steps, records)
    if entry is not None and entry.outcome == ProcessedEvent.Outcome.PROCESSED:
        timed.append(_succeeded(entry, records))
    elif shed and not any(s.step == Step.SHED for s in own_steps):
        timed.append(TimelineStep("shed", "shed under load", entry.processed_at if entry else None))
    fallback = event.occurred_at
    keyed = [(s.at or fallback, 1, s) for s in timed]
    queued = _queued(event, name, shed)
    if queued is not None:
        consumed = [at for at, _, s in keyed if s.kind not in _DISPATCH_SIDE]
        if queued.at is not None and consumed and min(consumed) < queued.at:
            # The outbox is marked after the broker took every message: a quick worker starts before that.
            queued = _with_detail(
                queued, "the outbox notes the time after the broker took every message; a worker may start sooner"
            )
        # The queueing goes before everything it caused, whatever the recorded times say.
        keyed.append((min([queued.at or fallback, *consumed]), 0, queued))
    # Stable: equal times keep the records' order.
    ordered = [s for _, _, s in sorted(keyed, key=lambda k: (k[0], k[1]))]
    if event.status == OutboxEvent.Status.PENDING and not shed:
        ordered.append(
            TimelineStep("pending", "waiting in the outbox", None, event.last_error or "the relay will send it")
        )
    return tuple(ordered)


def _with_detail(step: TimelineStep, note: str) -> TimelineStep:
    return dataclasses.replace(step, detail=f"{step.detail}; {note}" if step.detail else note)


def _queued(event: OutboxEvent, name: str, shed: bool) -> TimelineStep | None:
    if shed or event.status == OutboxEvent.Status.PENDING:
        return None
    if event.status == OutboxEvent.Status.DEFERRED:
        if name in (event.deferred_subscribers or ()):
            return None
        # Sent with the first dispatch; the outbox writes a time only once every subscriber has it.
        return TimelineStep("queued", "queued", None, "sent with the first dispatch (time not recorded)")
    detail = f"dispatch attempt {event.dispatch_attempts}" if event.dispatch_attempts > 1 else ""
    return TimelineStep("queued", "queued", event.dispatched_at, detail)


def _from_delivery_step(row: DeliveryStep, records: Records) -> TimelineStep:
    task = records.task(row.task_id)
    title, detail = _describe(row)
    link_url = link_text = ""
    if row.step == Step.DEAD_LETTERED:
        dead_letter = _dead_letter_for(row.subscriber, row.task_id, records)
        if dead_letter is not None:
            link_url, link_text = reverse("ops:deadletter", args=[dead_letter.id]), "the dead letter"
        else:
            detail += " (the dead letter is not stored: not yet, or purged)"
    elif row.step == Step.REPLAYED:
        replay = next((r for r in records.replays if r.task_id == row.task_id), None)
        if replay is not None:
            title = f"replayed by {replay.replayed_by}"
            link_url, link_text = reverse("ops:deadletter", args=[replay.dead_letter_id]), "the dead letter"
    return TimelineStep(row.step, title, row.at, detail, task, row.worker, link_url=link_url, link_text=link_text)


def _describe(row: DeliveryStep) -> tuple[str, str]:
    """A step's title and detail, in words; the detail strings come from eventbus/delivery/consumer.py."""
    detail = row.detail
    if row.step == Step.RETRIED:
        match = _RETRY.match(detail)
        if match:
            attempt = f"{match['attempt']}/{match['max']}"
            return f"retried (attempt {attempt}, again in {match['countdown']}s)", match["reason"]
        return "retried", detail
    if row.step == Step.WAITING:
        if detail.startswith("rate limit"):
            return "waiting for a rate-limit token", detail
        if detail.startswith("circuit breaker"):
            return "waiting: the circuit breaker is open", detail
        if detail.startswith("waiting for an earlier event"):
            return "waiting for an earlier event", detail
        return "waiting", detail
    if row.step == Step.DEFERRED:
        return "deferred: held in the outbox", detail
    if row.step == Step.DEAD_LETTERED:
        return "dead-lettered", detail
    return row.get_step_display(), detail


def _dead_letter_for(subscriber: str, task_id: str, records: Records) -> DeadLetter | None:
    candidates = [d for d in records.dead_letters if d.subscriber == subscriber]
    return next((d for d in candidates if task_id and d.task_id == task_id), candidates[-1] if candidates else None)


def _unnoted_dead_letters(name: str, own_steps: Sequence[DeliveryStep], records: Records) -> list[TimelineStep]:
    """Dead letters stored without a timeline step (writing a step is best effort)."""
    noted = {s.task_id for s in own_steps if s.step == Step.DEAD_LETTERED}
    return [
        TimelineStep(
            "dead_lettered",
            "dead-lettered",
            d.last_failed_at,
            f"{d.kind}: {d.reason}",
            records.task(d.task_id),
            link_url=reverse("ops:deadletter", args=[d.id]),
            link_text="the dead letter",
        )
        for d in records.dead_letters
        if d.subscriber == name and d.task_id not in noted
    ]


def _unnoted_replays(name: str, own_steps: Sequence[DeliveryStep], records: Records) -> list[TimelineStep]:
    noted = {s.task_id for s in own_steps if s.step == Step.REPLAYED}
    return [
        TimelineStep(
            "replayed",
            f"replayed by {r.replayed_by}",
            r.replayed_at,
            f"dead letter {r.dead_letter_id}",
            records.task(r.task_id),
            link_url=reverse("ops:deadletter", args=[r.dead_letter_id]),
            link_text="the dead letter",
        )
        for r in records.replays
        if r.subscriber == name and r.task_id not in noted
    ]


def _succeeded(entry: ProcessedEvent, records: Records) -> TimelineStep:
    subscription = ops_api.find_subscription(entry.subscriber)
    return TimelineStep(
        "succeeded",
        f"succeeded: {subscription.done_label}" if subscription else "succeeded",
        entry.processed_at,
        "the effect and the ledger entry committed together",
        records.task(entry.task_id),
        entry.worker,
        entry.runtime_ms,
    )
