"""What was committed against what was done, after the faults: the lab's verdict, Jepsen-style.

Read from the database the run used and from the SMTP sink, once the load
has stopped and the backlog has drained (or the drain's bound ran out):

- **committed**: every outbox event (a committed sign-up's ``user.signed_up``,
  an accepted batch's ``telemetry.readings_received``), and every sign-up the
  web answered 302 must have its user.
- **delivered**: (event, subscriber) pairs with a ledger row; **lost**: pairs
  with neither a ledger row nor a dead letter, a 302 with no user, readings
  accepted (202) that are not stored.
- **doubled**: an effect done twice: a second welcome email for one event (told
  by its ``X-Event-ID`` header at the sink), a second analytics row, a reading
  folded into its rollup twice.
- **absorbed**: copies that reached a subscriber again and that the ledger
  turned away (duplicate or stale timeline steps); **redelivered**: deliveries
  the reconciler sent again.
- The seconds from each fault to the first delivery of an event committed
  after it (the worst over the faults), and from the last fault until the last
  delivery (the backlog drained).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import InterfaceError, OperationalError, connection
from django.db.models import Max, Min, Sum

from analytics.models import AnalyticsEvent
from devinbox.sink import SmtpSink
from eventbus import ops_api
from eventbus.models import DeadLetter, DeliveryStep, OutboxEvent, ProcessedEvent
from lab.failover.load import LoadReport
from telemetry.models import Reading, Rollup


@dataclass
class Verdict:
    committed: int
    delivered: int
    lost: int
    doubled: int
    absorbed: int
    redelivered: int
    dead_lettered: int
    refused: int
    """Sign-ups answered something else than 302 (refused while a service was away): nothing to deliver."""
    fault_to_first_delivery: float | None
    drained_after: float | None
    problems: list[str]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def expected_pairs() -> set[tuple[str, str]]:
    """(event id, subscriber) for every outbox event and every subscriber of its type."""
    pairs = set()
    for event_id, event_type in OutboxEvent.objects.values_list("id", "type"):
        for subscription in ops_api.subscriptions_for(event_type):
            pairs.add((str(event_id), subscription.name))
    return pairs


def outstanding() -> int:
    """Pairs not yet done nor dead-lettered, plus outbox rows not yet sent."""
    done = {(str(e), s) for e, s in ProcessedEvent.objects.values_list("event_id", "subscriber")}
    done |= {(str(e), s) for e, s in DeadLetter.objects.values_list("event_id", "subscriber")}
    waiting = OutboxEvent.objects.exclude(status=OutboxEvent.Status.DISPATCHED).count()
    return len(expected_pairs() - done) + waiting


def wait_until_drained(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if outstanding() == 0:
                return True
        except (OperationalError, InterfaceError):
            # This process's connection did not survive a PostgreSQL restart: take a new one.
            connection.close()
        time.sleep(1.0)
    return outstanding() == 0


def check(report: LoadReport, sink: SmtpSink, faults: list[datetime]) -> Verdict:
    problems: list[str] = []
    pairs = expected_pairs()
    done = Counter((str(e), s) for e, s in ProcessedEvent.objects.values_list("event_id", "subscriber"))
    lettered = {(str(e), s) for e, s in DeadLetter.objects.values_list("event_id", "subscriber")}
    lost = sum(1 for pair in pairs if pair not in done and pair not in lettered)

    users = set(get_user_model().objects.values_list("email", flat=True))
    missing_users = [email for email in report.committed if email not in users]
    if missing_users:
        problems.append(f"{len(missing_users)} sign-ups answered 302 have no user: {missing_users[:3]}")
    stored_readings = Reading.objects.count()
    if stored_readings < report.readings_accepted:
        problems.append(f"{report.readings_accepted} readings accepted, {stored_readings} stored")
    lost += len(missing_users) + max(0, report.readings_accepted - stored_readings)

    emails = Counter(str(m.message()["X-Event-ID"] or "") for m in sink.messages)
    doubled = sum(n - 1 for n in emails.values() if n > 1)
    analytics = Counter(AnalyticsEvent.objects.values_list("event_id", flat=True))
    doubled += sum(n - 1 for n in analytics.values() if n > 1)
    folded = Rollup.objects.aggregate(n=Sum("count"))["n"] or 0
    if folded > stored_readings:
        problems.append(f"{folded} readings folded into rollups, {stored_readings} stored")
    doubled += max(0, folded - stored_readings)

    steps = Counter(DeliveryStep.objects.values_list("step", flat=True))
    letters = DeadLetter.objects.count()
    if letters:
        reasons = DeadLetter.objects.values_list("reason", flat=True)[:3]
        problems.append(f"{letters} dead letters: {[r[:100] for r in reasons]}")
    return Verdict(
        committed=OutboxEvent.objects.count(),
        delivered=sum(1 for pair in pairs if pair in done),
        lost=lost,
        doubled=doubled,
        absorbed=steps[DeliveryStep.Step.DUPLICATE] + steps[DeliveryStep.Step.STALE],
        redelivered=steps[DeliveryStep.Step.REDELIVERED],
        dead_lettered=letters,
        refused=sum(report.refused.values()),
        fault_to_first_delivery=_worst_gap_after(faults),
        drained_after=_drained_after(faults),
        problems=problems,
    )


def _worst_gap_after(faults: list[datetime]) -> float | None:
    """The longest wait, over the faults, from a fault to the first delivery of an event committed after it.

    Events committed before the fault may still be finishing in the workers (a task under way when
    the broker stops ends and is recorded): counting those would show a delivery at once.
    """
    gaps = []
    for at in faults:
        later = OutboxEvent.objects.filter(created_at__gt=at).values("id")
        first = ProcessedEvent.objects.filter(event_id__in=later).aggregate(t=Min("processed_at"))["t"]
        if first is not None:
            gaps.append((first - at).total_seconds())
    return round(max(gaps), 2) if gaps else None


def _drained_after(faults: list[datetime]) -> float | None:
    last = ProcessedEvent.objects.aggregate(t=Max("processed_at"))["t"]
    if last is None or not faults:
        return None
    return round(max(0.0, (last - max(faults)).total_seconds()), 2)
