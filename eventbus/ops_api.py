"""The bus's read-and-act API for operators: what ops/ pages and commands, /metrics, status pages and the lab use.

Use::

    from eventbus import ops_api

    ops_api.breaker_states()             # each breaker as a caller meets it now
    ops_api.counters_by_subscriber()     # every counter per subscriber
    ops_api.relay(ids=[event_id])        # an operator's "send now"
    ops_api.replay_dead_letters(queryset, by="alice")

Reading: the subscriptions as plain values (``SubscriptionInfo``), the
counters and their names, latency histograms, breaker and limiter states
(their state names as constants), queue depths and high-water marks, an
aggregate's event statuses, each worker's progress and stall verdict, the
retention of every table. Acting: relay now,
list, replay and purge dead letters (with the forms that validate an
operator's input), purge expired rows. Each name is re-exported from the room
that implements it, so this module is the list, not a second implementation;
the rooms behind it may move without their callers noticing.

Models: ``eventbus.models`` is part of the public contract, for reading. Its
tables are the bus's durable record (the outbox, the ledger, delivery steps,
dead letters, broker losses), already a contract through their migrations;
the admin, the ops pages' querysets, reports and the lab's checks filter and
count them as any Django app's models are read. Writing to them stays the
bus's own business: changes go through the functions here (replay, purge,
relay), never through ``save()`` or ``delete()`` from outside.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventbus.contract import registry
from eventbus.contract.retry import RetryPolicy
from eventbus.deadletters.forms import DeadLetterFilterForm, PurgeForm, ReplayForm, selected_ids
from eventbus.deadletters.operations import ReplayItem, ReplayReport, filter_dead_letters
from eventbus.deadletters.operations import purge as purge_dead_letters
from eventbus.deadletters.operations import replay as replay_dead_letters
from eventbus.observability.counters import (
    BATCHED,
    BATCHES,
    BREAKER_WAITS,
    DEAD_LETTERED,
    DEFERRED,
    DELIVERED,
    DUPLICATES,
    EFFECT_WAITS,
    ORDER_WAITS,
    RATE_LIMIT_WAITS,
    REDELIVERED,
    RETRIES,
    SHED,
    STALE,
)
from eventbus.observability.counters import read as read_counter
from eventbus.observability.latency import Histogram
from eventbus.observability.latency import histogram as latency_histogram
from eventbus.observability.stalls import WorkerHealth, worker_health
from eventbus.observability.status import DeliveryStatus, EventStatus
from eventbus.observability.status import for_aggregate as event_statuses_for
from eventbus.operations.retention import TableState, purge_expired
from eventbus.operations.retention import states as retention_states
from eventbus.outbox.relay import RelayResult, relay
from eventbus.protection.backpressure import high_water_mark
from eventbus.protection.backpressure import read_depth as queue_depth
from eventbus.protection.breaker import CLOSED, HALF_OPEN, OPEN
from eventbus.protection.states import (
    BREAKER_STATES,
    BreakerStatus,
    LimiterStatus,
    breaker_states,
    limiter_states,
)

__all__ = [
    "BATCHED",
    "BATCHES",
    "BREAKER_STATES",
    "BREAKER_WAITS",
    "CLOSED",
    "COUNTER_NAMES",
    "DEAD_LETTERED",
    "DEFERRED",
    "DELIVERED",
    "DUPLICATES",
    "EFFECT_WAITS",
    "HALF_OPEN",
    "OPEN",
    "ORDER_WAITS",
    "RATE_LIMIT_WAITS",
    "REDELIVERED",
    "RETRIES",
    "SHED",
    "STALE",
    "BreakerStatus",
    "DeadLetterFilterForm",
    "DeliveryStatus",
    "EventStatus",
    "Histogram",
    "LimiterStatus",
    "PurgeForm",
    "RelayResult",
    "ReplayForm",
    "ReplayItem",
    "ReplayReport",
    "SubscriptionInfo",
    "TableState",
    "WorkerHealth",
    "breaker_states",
    "counters_by_subscriber",
    "event_statuses_for",
    "filter_dead_letters",
    "find_subscription",
    "get_subscription",
    "high_water_mark",
    "latency_histogram",
    "limiter_states",
    "purge_dead_letters",
    "purge_expired",
    "queue_depth",
    "read_counter",
    "relay",
    "replay_dead_letters",
    "retention_states",
    "selected_ids",
    "subscriptions",
    "subscriptions_for",
    "worker_health",
    "write_dispatched_marks",
]

COUNTER_NAMES: tuple[str, ...] = (
    DELIVERED,
    DUPLICATES,
    RETRIES,
    DEAD_LETTERED,
    SHED,
    DEFERRED,
    STALE,
    ORDER_WAITS,
    RATE_LIMIT_WAITS,
    BREAKER_WAITS,
    EFFECT_WAITS,
    BATCHES,
    BATCHED,
    REDELIVERED,
)
"""Every counter the bus keeps per subscriber, in the order tables show them."""


@dataclass(frozen=True)
class SubscriptionInfo:
    """One subscriber as an operator sees it: what it consumes, where, and how it is delivered."""

    name: str
    """Stable task name, e.g. ``notifications.send_welcome_email``; also the ledger key."""
    event_types: tuple[str, ...]
    queue: str
    label: str
    """What a person reads, e.g. ``welcome email``."""
    done_label: str
    """The word for a finished effect, e.g. ``sent`` or ``recorded``."""
    critical: bool
    """Critical subscribers never lose an event; others may be shed under load."""
    ordered: bool
    batch: int | None
    """Up to this many events per handler call; None for one at a time."""
    retry: RetryPolicy


def _info(subscription: registry.Subscription) -> SubscriptionInfo:
    return SubscriptionInfo(
        name=subscription.name,
        event_types=subscription.event_types,
        queue=subscription.queue,
        label=subscription.label,
        done_label=subscription.done_label,
        critical=subscription.critical,
        ordered=subscription.ordered,
        batch=subscription.batch,
        retry=subscription.retry,
    )


def subscriptions() -> tuple[SubscriptionInfo, ...]:
    """Every declared subscriber, by name."""
    return tuple(_info(s) for s in registry.all_subscriptions())


def subscriptions_for(event_type: str) -> tuple[SubscriptionInfo, ...]:
    """The subscribers of ``event_type``, by name: one delivery each."""
    return tuple(_info(s) for s in registry.subscriptions_for(event_type))


def find_subscription(name: str) -> SubscriptionInfo | None:
    """The subscriber named ``name``; None for a name no subscriber has (any longer)."""
    found = registry.find(name)
    return None if found is None else _info(found)


def get_subscription(name: str) -> SubscriptionInfo:
    """The subscriber named ``name``; raises KeyError for a name no subscriber has."""
    return _info(registry.get(name))


def counters_by_subscriber() -> dict[str, dict[str, int]]:
    """Every counter of COUNTER_NAMES per subscriber, zero where a subscriber has none yet.

    One HGETALL per counter; a name that only the counters still know (a
    subscriber since removed) is included. Raises ``redis.RedisError`` when
    Redis cannot be read.
    """
    read = {name: read_counter(name) for name in COUNTER_NAMES}
    names = {s.name for s in registry.all_subscriptions()} | {label for values in read.values() for label in values}
    return {label: {name: read[name].get(label, 0) for name in COUNTER_NAMES} for label in sorted(names)}


def write_dispatched_marks() -> int:
    """Write now the dispatched marks this process gathers in the background; how many.

    A command that reports the outbox right after publishing calls this first:
    otherwise events the broker already took still read "pending" until the
    background writer's next round (eventbus/fastpath/marks.py).
    """
    from eventbus.outbox.fanout import MARKER  # imports models: only once Django is ready

    return MARKER.flush()
