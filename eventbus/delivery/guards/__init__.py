"""The guards of a delivery: one module each, the same two hooks, listed in order in eventbus/delivery/pipeline.py.

A guard sees a ``Batch`` of deliveries: one for the ordinary consumer, many for
the batching one (eventbus/delivery/batch.py), so that each guard has one
implementation. Its two hooks:

- ``before(batch, round_trip)``: queue its Redis commands on the round trip
  before the effect, and return a ``Check``; once the round trip is sent, the
  pipeline calls the check with the deliveries that every earlier guard let
  go on, and the check answers a verdict for each (eventbus/delivery/verdict.py),
  reading only its own replies;
- ``after(batch, round_trip, outcome)``: queue what the guard ends with on the
  round trip after the effect (``outcome`` is the verdict the delivery ended
  with: ``GO`` once the effect happened), and return what to do once that
  round trip was sent, or None.

A guard never acts on a verdict: the pipeline does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from eventbus.delivery.verdict import GO, Verdict

if TYPE_CHECKING:
    from eventbus.contract.envelope import Envelope
    from eventbus.contract.registry import Limiter, Subscription
    from eventbus.fastpath.bookkeeping import RoundTrip
    from eventbus.protection.breaker import CircuitBreaker


@dataclass(eq=False)
class Delivery:
    """One event delivered to one subscriber, in one attempt (a task run)."""

    subscription: Subscription
    event: Envelope
    raw: Any
    """The message's body, as a dead letter keeps it."""
    task_id: str
    retries: int
    lock_token: str | None = None
    """The effect lock's token, while this delivery holds the lock (guards/effectlock.py)."""
    effect_done: bool = False
    """An earlier delivery did the effect and the database refused its ledger entry (delivery/unrecorded.py):
    read with the effect lock; this delivery writes the entry without doing the effect again."""

    @cached_property
    def limiter(self) -> Limiter | None:
        return self.subscription.limiter() if self.subscription.limiter is not None else None

    @cached_property
    def breaker(self) -> CircuitBreaker | None:
        return self.subscription.breaker() if self.subscription.breaker is not None else None


@dataclass(eq=False)
class Batch:
    """Deliveries to one subscriber that go through the guards together (one, or a batching consumer's list)."""

    subscription: Subscription
    deliveries: list[Delivery]
    bulk: bool = False
    """The batching consumer's: the guards ask the database once for the whole list, and a delivery
    they cannot decide in bulk is sent on its own (``ALONE``)."""
    ledger_rows: list[tuple[object, str, int]] | None = field(default=None)
    """An ordered subscriber's ledger rows of the batch's aggregates, read once by the duplicate guard
    for the ordering guard (eventbus/delivery/ledger.py's ``history``)."""


Check = Callable[[list[Delivery]], list[Verdict]]
AfterSent = Callable[[], None]


def all_go(going: list[Delivery]) -> list[Verdict]:
    """The check of a guard that has nothing against these deliveries."""
    return [GO] * len(going)


class Guard:
    """A step of the pipeline before the effect; by default it has nothing to check and nothing to end."""

    def before(self, batch: Batch, round_trip: RoundTrip) -> Check:
        return all_go

    def after(self, batch: Batch, round_trip: RoundTrip, outcome: Verdict) -> AfterSent | None:
        return None
