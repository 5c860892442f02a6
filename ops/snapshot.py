"""What one snapshot of the asynchronous flow holds: queues, outbox, reconciler, subscribers, throughput.

Plain frozen records, filled by the readers of ops/status.py and shown by the
ops overview, its JSON and ``manage.py eventbus_status``. A part that could not
be read is ``None``, with its reason in ``Snapshot.unavailable``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eventbus.ops_api import COUNTER_NAMES, BreakerStatus, LimiterStatus


@dataclass(frozen=True)
class QueueStatus:
    name: str
    high_water_mark: int
    depth: int | None
    """Messages waiting; None when the broker could not be read."""
    workers: tuple[str, ...] | None
    """Worker nodes consuming this queue; None when the workers could not be asked."""

    @property
    def above_high_water_mark(self) -> bool:
        return self.depth is not None and self.depth >= self.high_water_mark


@dataclass(frozen=True)
class OutboxStatus:
    """Events not yet handed to every subscriber's queue."""

    pending: int
    deferred: int
    oldest_created_at: datetime | None
    oldest_age_seconds: float | None
    """Age of the oldest waiting event; None when nothing waits."""

    @property
    def waiting(self) -> int:
        return self.pending + self.deferred


@dataclass(frozen=True)
class ReconcileStatus:
    """The reconciler's view: deliveries not yet settled, those overdue, and broker data losses."""

    unsettled: int
    """Sent events not every delivery of which has ended yet (most are simply young)."""
    overdue: int
    """Of those, the ones sent more than EVENTBUS_REDELIVER_AFTER ago: the reconciler's backlog."""
    broker_losses: int
    """Broker data losses detected, ever."""
    last_loss_at: datetime | None
    last_loss_recovered_at: datetime | None
    """When the reconciler had checked every event sent before the last loss; None while it has not."""
    last_loss_redelivered: int


@dataclass(frozen=True)
class SubscriberStatus:
    name: str
    queue: str
    """Blank for a name that only the counters or dead letters still know."""
    critical: bool
    counters: dict[str, int] | None
    """Each of COUNTER_NAMES; None when Redis could not be read."""
    dead_letters: int | None
    """Dead letters stored for this subscriber; None when the database could not be read."""


@dataclass(frozen=True)
class MinuteCount:
    minute: datetime
    """Start of the minute, UTC."""
    seconds: float
    """Seconds of it that have passed: 60, less for the current minute."""
    published: int
    """Events written to the outbox."""
    processed: int
    """Effects recorded in the ledger (shed events not included)."""
    published_per_second: float
    processed_per_second: float


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    queues: tuple[QueueStatus, ...]
    outbox: OutboxStatus | None
    reconcile: ReconcileStatus | None
    subscribers: tuple[SubscriberStatus, ...]
    breakers: tuple[BreakerStatus, ...] | None
    limiters: tuple[LimiterStatus, ...] | None
    throughput: tuple[MinuteCount, ...] | None
    unavailable: dict[str, str] = field(default_factory=dict)
    """Part name (queues, workers, outbox, counters, dead_letters, breakers, limiters, throughput)
    to ``"unavailable: <reason>"``."""
    counter_names: tuple[str, ...] = COUNTER_NAMES

    @property
    def dead_letters_total(self) -> int | None:
        if "dead_letters" in self.unavailable:
            return None
        return sum(s.dead_letters or 0 for s in self.subscribers)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: datetimes as ISO 8601 strings, tuples as lists."""
        data = _jsonable(dataclasses.asdict(self))
        if self.outbox is not None:
            data["outbox"]["waiting"] = self.outbox.waiting
        data["dead_letters_total"] = self.dead_letters_total
        for queue, status in zip(data["queues"], self.queues, strict=True):
            queue["above_high_water_mark"] = status.above_high_water_mark
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
