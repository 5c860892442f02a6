"""Figure 3: the outbox relay draining a backlog, against a plain ``apply_async`` loop.

The situation: the broker was down for a while, ``N`` events wait in the
outbox, the broker is back. How fast does the relay hand them over?

Both sides, per repetition (candidate first in even repetitions, baseline
first in odd ones):

- candidate: untimed, ``N`` events are written to the outbox with
  ``publish()`` (``UserSignedUp``, a new aggregate each, 500 per transaction)
  with the on-commit dispatch held back, as when the broker is down. Timed:
  ``eventbus.outbox.relay.relay(grace=0)``, which claims them in batches, sends one
  message per subscriber each and marks them dispatched. Checked after,
  untimed: the relay reports ``N`` dispatched, none deferred or failed, and no
  row waits any more;
- baseline, the plain loop: the same ``N`` events' wire forms (read from the
  outbox once the backlog is written, untimed), and per event and per
  subscriber one ``task.apply_async(args=(wire,), queue=..., routing_key=...)``
  over one producer, the task, arguments and queue the dispatch uses. No
  database, no backpressure check, no marking.

Nobody consumes. After each side, untimed, the two subscriber queues must hold
exactly ``N`` messages each (one per subscriber per event: nothing lost,
doubled, shed or deferred), and are then emptied. The figure is events handed
to the broker per second, ``N / seconds``.
"""

from __future__ import annotations

import gc
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import report
from bench.environment import BenchEnv, purge_queues, queue_depths
from bench.sink import SinkProcess

# Django-dependent modules are imported inside the functions: ``python -m
# bench.relay_backlog`` imports this module before bench.world sets Django up.

EVENTS = 5000
EVENTS_QUICK = 500
REPETITIONS = 3
WARMUP = 100
SEED_CHUNK = 500
SUBSCRIBER_QUEUES = ("notifications", "analytics")
TITLE = "outbox relay draining a backlog"

Wire = dict[str, Any]

# A fresh user id (and so a fresh aggregate) per event across the whole run.
_numbers = itertools.count(5_000_000)


def _leave_for_relay(wire: object) -> None:
    """Stands in for the on-commit dispatch while the backlog is written (the broker is 'down')."""


def seed_backlog(count: int) -> list[Wire]:
    """``count`` pending outbox events (untimed); returns their wire forms, oldest first."""
    from unittest import mock

    from django.db import transaction

    from eventbus.models import OutboxEvent
    from eventbus.outbox.publish import publish
    from signups.events import UserSignedUp, aggregate_of

    waiting = OutboxEvent.objects.exclude(status=OutboxEvent.Status.DISPATCHED).count()
    if waiting:
        raise RuntimeError(f"{waiting} events already wait in the outbox; the backlog would not be {count}")
    with mock.patch("eventbus.outbox.publish.dispatch_after_commit", _leave_for_relay):
        for start in range(0, count, SEED_CHUNK):
            with transaction.atomic():
                for _ in range(min(SEED_CHUNK, count - start)):
                    n = next(_numbers)
                    publish(UserSignedUp(user_id=n, channel="web"), aggregate=aggregate_of(n))
    rows = OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).order_by("created_at")
    wires = [row.to_wire() for row in rows]
    if len(wires) != count:
        raise RuntimeError(f"the outbox holds {len(wires)} pending events, not {count}")
    return wires


def plain_loop(wires: list[Wire]) -> None:
    """The baseline: one ``apply_async`` per subscriber per event, over one producer, no database."""
    from eventbus.contract import registry
    from project.celery import app

    with app.producer_or_acquire() as producer:
        for wire in wires:
            for subscription in registry.subscriptions_for(str(wire["type"])):
                subscription.task.apply_async(
                    args=(wire,),
                    queue=subscription.queue,
                    routing_key=subscription.queue,
                    producer=producer,
                    retry=False,
                )


def relay_backlog(events: int) -> None:
    """The candidate: the relay, as beat or ``manage.py relay_outbox`` runs it, with no grace."""
    from eventbus.outbox.relay import relay

    result = relay(grace=0)
    if (result.dispatched, result.deferred, result.failed) != (events, 0, 0):
        raise RuntimeError(f"relay: {result}, not {events} dispatched")


def _timed(call: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _check_and_purge(env: BenchEnv, side: str, events: int) -> None:
    """Untimed: one message per subscriber per event in the queues, then empty them."""
    depths = queue_depths(env, SUBSCRIBER_QUEUES)
    purge_queues(env, SUBSCRIBER_QUEUES)
    expected = dict.fromkeys(SUBSCRIBER_QUEUES, events)
    if depths != expected:
        raise RuntimeError(f"{side}: the queues held {depths}, not {expected}")


def run_relay(env: BenchEnv, events: int) -> float:
    from eventbus.models import OutboxEvent

    seconds = _timed(lambda: relay_backlog(events))
    waiting = OutboxEvent.objects.exclude(status=OutboxEvent.Status.DISPATCHED).count()
    if waiting:
        raise RuntimeError(f"relay: {waiting} events still wait after the run")
    _check_and_purge(env, "relay", events)
    return seconds


def run_plain_loop(env: BenchEnv, wires: list[Wire]) -> float:
    seconds = _timed(lambda: plain_loop(wires))
    _check_and_purge(env, "plain loop", len(wires))
    return seconds


def measure(env: BenchEnv, sink: SinkProcess, *, quick: bool, say: Callable[[str], None]) -> dict[str, dict]:
    """Figure 3: events handed to the broker per second, the relay against the plain loop."""
    from django.conf import settings

    from eventbus.outbox.fanout import FLUSH_EVERY
    from project import queues

    if SUBSCRIBER_QUEUES != (queues.NOTIFICATIONS, queues.ANALYTICS):
        raise RuntimeError(f"the subscriber queues are {queues.NOTIFICATIONS, queues.ANALYTICS} now")
    events = EVENTS_QUICK if quick else EVENTS
    if events >= settings.EVENTBUS_HIGH_WATER_MARK:
        # Backpressure would defer and shed part of the backlog: the sides would not send the same.
        raise RuntimeError(f"{events} events reach the high-water mark ({settings.EVENTBUS_HIGH_WATER_MARK})")
    purge_queues(env, SUBSCRIBER_QUEUES)
    # Warm-up, untimed: connections, the producer pool, declared queues, code paths.
    warm = seed_backlog(WARMUP)
    relay_backlog(WARMUP)
    plain_loop(warm)
    purge_queues(env, SUBSCRIBER_QUEUES)

    say(f"figure 3: {REPETITIONS} x {events} events per side")
    candidate: list[float] = []
    baseline: list[float] = []
    repetitions: list[dict[str, Any]] = []
    for rep in range(REPETITIONS):
        # Both sides send the same events: the backlog's wire forms, read before the relay runs.
        wires = seed_backlog(events)
        seconds: dict[str, float] = {}
        if rep % 2 == 0:
            seconds["candidate"] = run_relay(env, events)
            seconds["baseline"] = run_plain_loop(env, wires)
        else:
            seconds["baseline"] = run_plain_loop(env, wires)
            seconds["candidate"] = run_relay(env, events)
        candidate.append(events / seconds["candidate"])
        baseline.append(events / seconds["baseline"])
        repetitions.append({"events": events, "seconds": seconds})
        say(f"  rep {rep + 1}: {candidate[-1]:,.0f} vs {baseline[-1]:,.0f} events/s")
    ratio = statistics.median(c / b for c, b in zip(candidate, baseline, strict=True))
    say(f"figure 3: {statistics.median(candidate):,.0f} vs {statistics.median(baseline):,.0f} events/s, {ratio:.2f}x")
    row = report.row(
        f"{events:,} events, 2 subscribers each",
        unit="events/s",
        candidate=("relay(grace=0) of a pending backlog", candidate),
        baseline=("plain apply_async loop, one producer", baseline),
        target=(">=", 2.0),
    )
    notes = [
        f"events handed to the broker per second, {REPETITIONS} repetitions of {events:,} events per side, "
        "nobody consuming; after each side the two queues held one message per event each, then were emptied; "
        f"the relay claims {settings.EVENTBUS_RELAY_BATCH} rows at a time and sends {FLUSH_EVERY} events' "
        "messages per Redis round trip"
    ]
    return {"3_relay": report.rows_figure(TITLE, [row], repetitions, notes)}


def main() -> int:
    import argparse

    from bench.world import world

    parser = argparse.ArgumentParser(prog="python -m bench.relay_backlog", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{EVENTS_QUICK} events per side instead of {EVENTS}")
    args = parser.parse_args()

    def say(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    with world(say=say) as (env, sink):
        figures = measure(env, sink, quick=args.quick, say=say)
    print(report.markdown_table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
