"""The invariant every fault test ends with: no committed sign-up lost, none doubled.

For every committed sign-up (a ``user.signed_up`` outbox row, committed with
its user): exactly one welcome email at the sink, told by its Message-ID
``<welcome.{event_id}@testserver>``, and exactly one analytics row; no email for
anything else; every outbox row dispatched; and no dead letter but those the
test meant to cause.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model

from analytics.models import AnalyticsEvent
from devinbox.sink import SmtpSink
from eventbus.models import DeadLetter, DeliveryStep, OutboxEvent
from tests.faults.harness import signed_up_events, welcome_id

summaries: list[str] = []
"""Every summary line printed in this run, for the terminal summary (conftest.py)."""


@dataclass
class Tally:
    """What happened to the committed sign-ups, counted at the sink and in the database."""

    committed: int
    emailed: int
    recorded: int
    duplicates: int
    lost: int
    dead_lettered: int
    redelivered: int = 0
    """Deliveries the reconciler sent again (its ``redelivered`` timeline steps)."""
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"committed={self.committed} emailed={self.emailed} recorded={self.recorded} "
            f"duplicates={self.duplicates} lost={self.lost} dead_lettered={self.dead_lettered} "
            f"redelivered={self.redelivered}"
        )


def check_invariant(
    sink: SmtpSink,
    label: str,
    *,
    committed: int | None = None,
    dead_letters: Callable[[DeadLetter], bool] | None = None,
    expected_dead_letters: int = 0,
) -> Tally:
    """Every committed sign-up: exactly one welcome email (by Message-ID) and one analytics row.

    ``committed`` is how many sign-ups the test saw succeed (302). Dead letters
    must be exactly ``expected_dead_letters``, each accepted by ``dead_letters``.
    Prints the summary line and fails the test on any difference.
    """
    events = signed_up_events()
    arrivals = Counter(m.message_id for m in sink.messages)
    rows = Counter(
        str(e) for e in AnalyticsEvent.objects.filter(type="user.signed_up").values_list("event_id", flat=True)
    )
    expected = {welcome_id(e) for e in events}
    emailed = sum(1 for e in events if arrivals[welcome_id(e)] >= 1)
    recorded = sum(1 for e in events if rows[e] >= 1)
    duplicates = sum(n - 1 for mid, n in arrivals.items() if mid in expected and n > 1)
    duplicates += sum(n - 1 for n in rows.values() if n > 1)
    lost = sum(1 for e in events if arrivals[welcome_id(e)] == 0) + sum(1 for e in events if rows[e] == 0)
    letters = list(DeadLetter.objects.all())
    redelivered = DeliveryStep.objects.filter(step=DeliveryStep.Step.REDELIVERED).count()
    tally = Tally(len(events), emailed, recorded, duplicates, lost, len(letters), redelivered)

    if committed is not None and committed != len(events):
        tally.problems.append(f"{committed} sign-ups answered 302 but {len(events)} user.signed_up events exist")
    users = _user_count()
    if users != len(events):
        tally.problems.append(f"{users} users but {len(events)} user.signed_up events")
    strays = sorted(mid for mid in arrivals if mid not in expected)
    if strays:
        tally.problems.append(f"{len(strays)} emails for no committed sign-up: {strays[:5]}")
    waiting = OutboxEvent.objects.exclude(status=OutboxEvent.Status.DISPATCHED).count()
    if waiting:
        tally.problems.append(f"{waiting} outbox events never dispatched")
    if len(letters) != expected_dead_letters:
        tally.problems.append(f"{len(letters)} dead letters, expected {expected_dead_letters}: {_describe(letters)}")
    unexpected = [d for d in letters if dead_letters is None or not dead_letters(d)]
    if unexpected:
        tally.problems.append(f"unexpected dead letters: {_describe(unexpected)}")

    line = f"[{label}] {tally.line()}"
    summaries.append(line)
    print(line)
    assert tally.duplicates == 0 and tally.lost == 0 and not tally.problems, f"{line}; " + "; ".join(tally.problems)
    assert tally.emailed == tally.recorded == tally.committed
    return tally


def _user_count() -> int:
    return get_user_model().objects.count()


def _describe(letters: list[DeadLetter]) -> str:
    return json.dumps([f"{d.kind} {d.subscriber or d.task_name}: {d.reason[:120]}" for d in letters])
