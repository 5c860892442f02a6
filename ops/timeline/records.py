"""The rows about one event, loaded once: the ledger, the steps, dead letters, replays, stored results."""

from __future__ import annotations

from dataclasses import dataclass

from django_celery_results.models import TaskResult

from eventbus.models import DeadLetter, DeadLetterReplay, DeliveryStep, OutboxEvent, ProcessedEvent
from ops.timeline.links import TaskRef, task_refs


@dataclass(frozen=True)
class Records:
    """The rows about one event, loaded once."""

    ledger: dict[str, ProcessedEvent]
    steps: list[DeliveryStep]
    dead_letters: list[DeadLetter]
    replays: list[DeadLetterReplay]
    results: list[TaskResult]
    tasks: dict[str, TaskRef]

    @classmethod
    def load(cls, event: OutboxEvent) -> Records:
        ledger = {p.subscriber: p for p in ProcessedEvent.objects.filter(event_id=event.id)}
        steps = list(DeliveryStep.objects.filter(event_id=event.id).order_by("at", "id"))
        dead_letters = list(DeadLetter.objects.filter(event_id=event.id).order_by("last_failed_at"))
        replays = list(DeadLetterReplay.objects.filter(dead_letter__event_id=event.id).order_by("replayed_at"))
        # The tasks' stored arguments are the envelope: every task that carried the event names its id.
        results = list(
            TaskResult.objects.filter(task_args__contains=str(event.id))
            .only("task_id", "task_name", "date_created")
            .order_by("date_created")
        )
        task_ids = [p.task_id for p in ledger.values()] + [s.task_id for s in steps]
        task_ids += [d.task_id for d in dead_letters] + [r.task_id for r in replays] + [r.task_id for r in results]
        return cls(ledger, steps, dead_letters, replays, results, task_refs(task_ids))

    def subscribers(self) -> set[str]:
        """Every subscriber the records name (stored task results are matched to these, never added)."""
        named = set(self.ledger) | {s.subscriber for s in self.steps} | {r.subscriber for r in self.replays}
        return named | {d.subscriber for d in self.dead_letters if d.subscriber}

    def task(self, task_id: str) -> TaskRef | None:
        return self.tasks.get(task_id) if task_id else None
