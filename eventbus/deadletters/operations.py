"""Operating on dead letters: list, replay, purge. The one implementation behind every front end.

The ``deadletters`` management command, Django admin and the ops pages all
call these functions, so a replay from any of them is sent, checked and
recorded the same way.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from eventbus.contract import registry
from eventbus.contract.envelope import Envelope
from eventbus.contract.errors import PoisonMessage
from eventbus.delivery import ledger
from eventbus.models import DeadLetter, DeadLetterReplay
from eventbus.observability import timeline

log = logging.getLogger(__name__)

# The pause between replayed messages; a module attribute so tests can replace it.
sleep: Callable[[float], None] = time.sleep

PURGE_BATCH = 500


def filter_dead_letters(
    subscriber: str | None = None,
    event_type: str | None = None,
    older_than: timedelta | None = None,
    newer_than: timedelta | None = None,
    kind: str | None = None,
) -> QuerySet[DeadLetter]:
    """Dead letters matching every given filter, newest failure first.

    Ages count from the last failure: ``older_than=timedelta(days=3)`` is
    "last failed more than three days ago".
    """
    queryset = DeadLetter.objects.all()
    if subscriber:
        queryset = queryset.filter(subscriber=subscriber)
    if event_type:
        queryset = queryset.filter(event_type=event_type)
    if kind:
        queryset = queryset.filter(kind=kind)
    now = timezone.now()
    if older_than is not None:
        queryset = queryset.filter(last_failed_at__lt=now - older_than)
    if newer_than is not None:
        queryset = queryset.filter(last_failed_at__gte=now - newer_than)
    return queryset.order_by("-last_failed_at")


@dataclass(frozen=True)
class ReplayItem:
    """What happened, or would happen, to one dead letter."""

    dead_letter_id: uuid.UUID
    subscriber: str
    """The subscriber it is (or would be) sent to; blank when none could be told."""
    replayable: bool
    reason: str = ""
    """Why it is not replayable, or why it was not sent."""
    already_processed: bool = False
    """The ledger already holds (event, subscriber): the consumer will skip the replay, a no-op."""
    sent: bool = False
    task_id: str = ""

    def describe(self, dry_run: bool) -> str:
        head = f"{self.dead_letter_id}"
        if not self.replayable:
            return f"{head}: not replayable: {self.reason}"
        ledger_note = (
            "already processed per the ledger, so a replay is a no-op"
            if self.already_processed
            else "not processed yet, the handler will run"
        )
        if dry_run:
            return f"{head}: would replay to {self.subscriber}; {ledger_note}"
        if not self.sent:
            return f"{head}: not sent to {self.subscriber}: {self.reason}"
        return f"{head}: replayed to {self.subscriber} as task {self.task_id}; {ledger_note}"


@dataclass
class ReplayReport:
    dry_run: bool
    items: list[ReplayItem] = field(default_factory=list)

    @property
    def sent(self) -> list[ReplayItem]:
        return [i for i in self.items if i.sent]

    @property
    def not_replayable(self) -> list[ReplayItem]:
        return [i for i in self.items if not i.replayable]

    @property
    def unsent(self) -> list[ReplayItem]:
        """Replayable, not a dry run, yet not sent: the broker failed."""
        return [i for i in self.items if i.replayable and not i.sent and not self.dry_run]

    @property
    def no_ops(self) -> list[ReplayItem]:
        return [i for i in self.items if i.replayable and i.already_processed]

    def summary(self) -> str:
        replayable = len(self.items) - len(self.not_replayable)
        if self.dry_run:
            text = f"dry run: {replayable} of {len(self.items)} dead letters would be replayed"
        else:
            text = f"replayed {len(self.sent)} of {len(self.items)} dead letters"
        text += f", {len(self.no_ops)} of them already processed (no-op), {len(self.not_replayable)} not replayable"
        if self.unsent:
            text += f", {len(self.unsent)} not sent (broker failure)"
        return text

    def lines(self) -> list[str]:
        return [item.describe(self.dry_run) for item in self.items]


@dataclass(frozen=True)
class _Plan:
    subscription: registry.Subscription | None
    envelope: dict[str, Any] | None
    event_id: uuid.UUID | None
    reason: str


def _plan(dead_letter: DeadLetter, override: str | None) -> _Plan:
    """Where ``dead_letter`` would go and what it would carry, or why it cannot be replayed."""
    if dead_letter.body_truncated:
        # Only a preview was kept: what would be sent is not what failed.
        return _Plan(
            None,
            None,
            None,
            f"the body was cut when stored (its first {len(dead_letter.raw_body.encode())} of "
            f"{dead_letter.body_length} bytes kept, sha256 {dead_letter.body_sha256}); a replay could not be faithful",
        )
    target = override or dead_letter.subscriber
    if not target:
        return _Plan(None, None, None, "no subscriber recorded; name the subscriber to replay it to")
    try:
        subscription = registry.get(target)
    except KeyError:
        return _Plan(None, None, None, f"no subscriber named {target!r}")
    if dead_letter.body is None:
        return _Plan(subscription, None, None, "the body was not JSON (kept as raw text); there is nothing to replay")
    try:
        # Checked against the code running now: a type or version deployed
        # since the failure makes an old poison message replayable.
        event = Envelope.from_dict(dead_letter.body)
    except PoisonMessage as exc:
        return _Plan(subscription, None, None, f"the envelope is still invalid: {exc}")
    if event.type not in subscription.event_types:
        return _Plan(subscription, None, None, f"{subscription.name} does not consume {event.type}")
    return _Plan(subscription, dead_letter.body, event.id, "")


def replay(
    dead_letters: Iterable[DeadLetter],
    *,
    by: str,
    subscriber: str | None = None,
    rate: float | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Send each dead letter's stored envelope back to its subscriber's queue, as a fresh task.

    ``subscriber`` sends them to another subscriber instead of the recorded
    one. ``rate`` (messages per second) paces the sends. Each new message has
    a new task id and starts with zero retries; each send is recorded as a
    DeadLetterReplay by ``by``. The dead letter itself is kept.

    Replaying is safe to repeat: the consumer's ledger makes a second delivery
    of an event already processed by that subscriber a no-op; the report says
    beforehand which ones the ledger will skip. With ``dry_run`` nothing is
    sent or recorded. Sending stops at the first broker failure; the rest are
    reported as not sent.
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be above zero")
    if isinstance(dead_letters, QuerySet):
        # Oldest failure first: per aggregate, events go back in the order they failed.
        dead_letters = dead_letters.order_by("last_failed_at")
    report = ReplayReport(dry_run=dry_run)
    broker_error: str = ""
    sent_any = False
    for dead_letter in list(dead_letters):
        plan = _plan(dead_letter, subscriber)
        if plan.subscription is None or plan.envelope is None:
            target = plan.subscription.name if plan.subscription else (subscriber or dead_letter.subscriber)
            report.items.append(ReplayItem(dead_letter.id, target, replayable=False, reason=plan.reason))
            continue
        target = plan.subscription.name
        already = ledger.has_processed(plan.event_id, target)
        if dry_run or broker_error:
            reason = f"not attempted after a broker failure: {broker_error}" if broker_error else ""
            report.items.append(ReplayItem(dead_letter.id, target, True, reason, already_processed=already))
            continue
        if rate and sent_any:
            sleep(1.0 / rate)
        task_id = str(uuid.uuid4())
        try:
            plan.subscription.task.apply_async(
                args=(plan.envelope,),
                queue=plan.subscription.queue,
                routing_key=plan.subscription.queue,
                task_id=task_id,
                # An operator waits on this; a sick broker must fail it, not hang it.
                retry=False,
            )
        except Exception as exc:  # the broker's errors are many and transport-specific
            broker_error = f"{type(exc).__name__}: {exc}"
            log.warning("replay of dead letter %s to %s failed: %s", dead_letter.id, target, broker_error)
            report.items.append(ReplayItem(dead_letter.id, target, True, broker_error, already_processed=already))
            continue
        sent_any = True
        DeadLetterReplay.objects.create(
            dead_letter=dead_letter, replayed_by=by, subscriber=target, task_id=task_id, skipped_by_ledger=already
        )
        timeline.note(plan.event_id, target, timeline.Step.REPLAYED, f"dead letter {dead_letter.id} by {by}", task_id)
        log.info("dead letter %s replayed to %s as task %s by %s", dead_letter.id, target, task_id, by)
        report.items.append(
            ReplayItem(dead_letter.id, target, True, already_processed=already, sent=True, task_id=task_id)
        )
    return report


def purge(queryset: QuerySet[DeadLetter]) -> int:
    """Delete the dead letters in ``queryset`` (their replay records go with them); returns how many.

    Deletes in batches, so that retention over a large backlog holds no long
    lock on a database shared with the workers.
    """
    total = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:PURGE_BATCH])
        if not ids:
            return total
        _, per_model = DeadLetter.objects.filter(pk__in=ids).delete()
        total += per_model.get(DeadLetter._meta.label, 0)


def purge_older_than(days: int) -> int:
    """Retention: delete dead letters whose last failure is more than ``days`` days old."""
    if days < 1:
        raise ValueError("retention must be at least one day")
    count = purge(filter_dead_letters(older_than=timedelta(days=days)))
    if count:
        log.info("purged %d dead letters older than %d days", count, days)
    return count
