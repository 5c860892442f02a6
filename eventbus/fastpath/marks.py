"""Dispatched marks gathered in the background and written many rows per UPDATE.

Once the broker has taken an event's messages, its outbox row is marked
``dispatched``, so that the relay does not send it again. Written by the
request that sent the event, that mark is a second write transaction per
request, after the one that wrote the change and the row; on SQLite, a
second turn per request for the database's one write lock.

With ``EVENTBUS_MARK_BATCH_SECONDS`` above 0, the request hands its outcome to
this process's marker and returns. The marker's thread (eventbus/fastpath/gatherer.py)
wakes when an outcome arrives, waits that many seconds for others, and writes
all of them in one transaction (``fanout.mark_dispatched``: one UPDATE per set of
subscribers).

The delivery guarantee is unchanged:
- An event is sent once the broker has its messages. The mark does not send
  anything; it tells the relay that the event needs nothing more.
- A process that dies before its marker writes leaves those rows pending.
  The relay sends them again once ``EVENTBUS_RELAY_GRACE`` has passed, and the
  consumers' ledger makes the second delivery harmless. This is the same case
  as a process killed between the send and the mark, which could always
  happen. The grace must therefore be several times the batch time; settings
  checks this at start.
- A process that exits in an orderly way writes what it holds: at exit, and
  when a Celery pool process shuts down. That flush first waits for a write
  the thread has begun.

Only outcomes sent to every subscriber wait here. A shed, deferred or partial
outcome writes the ledger or names who still waits, so the request settles it
at once.

Buys: figure 4 (fast hasher), 0.63x -> 0.75x with levers 14 and 15 (lever 16,
docs/benchmarks-levers.md#the-fast-path-module-by-module).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from django.db import transaction

from eventbus.fastpath.gatherer import Gatherer

if TYPE_CHECKING:
    from eventbus.outbox.fanout import Outcome


def can_wait(outcomes: Sequence[Outcome]) -> bool:
    """Whether these outcomes only need their rows marked dispatched (nothing shed, deferred or partial)."""
    return all(not (o.shed or o.deferred or o.partial) for o in outcomes)


class Marker(Gatherer["Outcome"]):
    """One process's pending marks and the thread that writes them (eventbus/fastpath/gatherer.py).

    ``mark_dispatched`` is the outbox's own (eventbus/outbox/fanout.py, which
    owns the process's marker): this module writes through it, in one
    transaction per round, and imports nothing of the outbox.
    """

    def __init__(self, mark_dispatched: Callable[[list[Outcome]], object]) -> None:
        def write(outcomes: list[Outcome]) -> None:
            with transaction.atomic():
                mark_dispatched(outcomes)

        super().__init__(
            "eventbus-marks",
            write,
            failure="those sent events stay pending; the relay sends them again after its grace",
        )

    def defer(self, outcomes: Sequence[Outcome], batch_seconds: float) -> None:
        """Mark these rows dispatched within ``batch_seconds``, together with the others gathered meanwhile."""
        self.add(outcomes, batch_seconds)
