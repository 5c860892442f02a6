"""Figure R: one reconciler pass over 100,000 delivered events with 1,000 deliveries the broker lost.

The situation: a busy outbox whose rows have all become due (older than
``EVENTBUS_REDELIVER_AFTER``), nearly every delivery ended in the ledger, and
1,000 deliveries without an end (their messages lost). One pass of
``eventbus.operations.reconcile.reconcile(max_seconds=None)`` must settle the 99,000
complete events (each read once, then never again) and send the 1,000
missing deliveries again.

Seeded untimed, per repetition: ``N`` dispatched ``user.signed_up`` rows sent
to both subscribers (bulk inserts, ``last_sent_at`` an hour ago) and their
ledger rows, less one welcome-email entry for each of ``MISSING`` events spread
over the table. Timed: the pass. Checked after: the pass scanned ``N`` rows,
settled ``N - MISSING``, sent ``MISSING`` messages, and the notifications queue
holds exactly ``MISSING`` messages; a second pass, also timed, reads nothing.

The baseline, for scale: the same ``MISSING`` deliveries sent with a plain
``apply_async`` loop over one producer (the least a resend can cost, knowing
already what to resend). The ratio says what finding them among ``N`` costs on
top. No target: the issue asks for the time and the rows read.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from bench import report
from bench.environment import BenchEnv, purge_queues, queue_depths
from bench.sink import SinkProcess

EVENTS = 100_000
EVENTS_QUICK = 10_000
MISSING = 1_000
MISSING_QUICK = 100
REPETITIONS = 3
CHUNK = 5_000
WELCOME = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"
TITLE = "reconciler pass over delivered events"


def seed(events: int, missing: int) -> list[str]:
    """``events`` due, delivered outbox rows with their ledger; ``missing`` of them lack the email's entry."""
    from django.db import transaction
    from django.utils import timezone

    from eventbus.models import OutboxEvent, ProcessedEvent

    sent_at = timezone.now() - timedelta(hours=1)
    every = events // missing
    lacking: list[str] = []
    for start in range(0, events, CHUNK):
        rows, ledger = [], []
        for n in range(start, min(start + CHUNK, events)):
            event_id = uuid.uuid4()
            aggregate = f"bench-user:{uuid.uuid4().hex}"
            rows.append(
                OutboxEvent(
                    id=event_id,
                    type="user.signed_up",
                    version=1,
                    aggregate=aggregate,
                    sequence=1,
                    occurred_at=sent_at,
                    payload={"user_id": n},
                    status=OutboxEvent.Status.DISPATCHED,
                    dispatched_at=sent_at,
                    sent_to=[ANALYTICS, WELCOME],
                    last_sent_at=sent_at,
                )
            )
            subscribers = [ANALYTICS, WELCOME]
            if n % every == 0 and len(lacking) < missing:
                subscribers = [ANALYTICS]
                lacking.append(str(event_id))
            ledger += [
                ProcessedEvent(
                    event_id=event_id, subscriber=s, event_type="user.signed_up", aggregate=aggregate, sequence=1
                )
                for s in subscribers
            ]
        with transaction.atomic():
            OutboxEvent.objects.bulk_create(rows)
            ProcessedEvent.objects.bulk_create(ledger)
    if len(lacking) != missing:
        raise RuntimeError(f"seeded {len(lacking)} missing deliveries, not {missing}")
    return lacking


def clear() -> None:
    from eventbus.models import DeliveryStep, OutboxEvent, ProcessedEvent

    OutboxEvent.objects.all().delete()
    ProcessedEvent.objects.all().delete()
    DeliveryStep.objects.all().delete()


def plain_resend(event_ids: list[str]) -> None:
    """The baseline: the missing deliveries, known already, one ``apply_async`` each over one producer."""
    from eventbus.contract import registry
    from eventbus.models import OutboxEvent
    from project.celery import app

    task = registry.get(WELCOME).task
    wires = [row.to_wire() for row in OutboxEvent.objects.filter(id__in=event_ids)]
    with app.producer_or_acquire() as producer:
        for wire in wires:
            task.apply_async(args=(wire,), queue="notifications", routing_key="notifications", producer=producer)


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def one_pass(env: BenchEnv, events: int, missing: int) -> dict[str, Any]:
    from eventbus.operations.reconcile import reconcile

    lacking = seed(events, missing)
    seconds, result = _timed(lambda: reconcile(max_seconds=None))
    expected = (events, events - missing, missing)
    if (result.scanned, result.settled, result.redelivered) != expected:
        raise RuntimeError(f"reconciler pass: {result.summary()}, not scanned/settled/sent {expected}")
    depth = queue_depths(env, ("notifications",))["notifications"]
    if depth != missing:
        raise RuntimeError(f"the notifications queue holds {depth} messages, not {missing}")
    purge_queues(env, ("notifications", "analytics"))
    idle_seconds, idle = _timed(lambda: reconcile(max_seconds=None))
    if idle.scanned:
        raise RuntimeError(f"the second pass read {idle.scanned} rows")
    baseline_seconds, _ = _timed(lambda: plain_resend(lacking))
    purge_queues(env, ("notifications", "analytics"))
    clear()
    return {
        "events": events,
        "missing": missing,
        "pass_seconds": seconds,
        "rows_read": result.scanned,
        "settled": result.settled,
        "sent_again": result.redelivered,
        "second_pass_seconds": idle_seconds,
        "plain_resend_seconds": baseline_seconds,
    }


def measure(env: BenchEnv, sink: SinkProcess, *, quick: bool, say: Callable[[str], None]) -> dict[str, dict]:
    """Figure R: the pass's time and rows read; the plain resend of what it found, for scale."""
    from django.conf import settings

    events, missing = (EVENTS_QUICK, MISSING_QUICK) if quick else (EVENTS, MISSING)
    purge_queues(env, ("notifications", "analytics"))
    clear()
    say(f"figure R: {REPETITIONS} passes over {events:,} events with {missing:,} deliveries missing")
    reps = []
    for rep in range(REPETITIONS):
        reps.append(one_pass(env, events, missing))
        r = reps[-1]
        say(
            f"  rep {rep + 1}: pass {r['pass_seconds']:.2f}s ({r['rows_read']:,} rows read, {r['sent_again']:,} sent), "
            f"second pass {r['second_pass_seconds'] * 1000:.1f} ms, plain resend {r['plain_resend_seconds']:.2f}s"
        )
    passes = [r["pass_seconds"] for r in reps]
    say(f"figure R: pass {statistics.median(passes):.2f}s median")
    rows = [
        report.row(
            f"{events:,} delivered events, {missing:,} deliveries lost: one pass",
            unit="s",
            candidate=("reconcile(max_seconds=None)", passes),
            baseline=(f"plain apply_async of the {missing:,} lost", [r["plain_resend_seconds"] for r in reps]),
            digits=2,
        ),
        report.row(
            "the next pass (everything settled)",
            unit="ms",
            candidate=("reconcile(max_seconds=None)", [r["second_pass_seconds"] * 1000 for r in reps]),
            baseline=("the first pass", [r["pass_seconds"] * 1000 for r in reps]),
            digits=1,
        ),
    ]
    notes = [
        f"rows read per pass: {reps[0]['rows_read']:,} (every due row once), settled {reps[0]['settled']:,}, "
        f"sent again {reps[0]['sent_again']:,}; batches of EVENTBUS_RECONCILE_BATCH={settings.EVENTBUS_RECONCILE_BATCH}"
        " rows, each read, leased (an UPDATE and a read again), checked (ledger, dead letters, heartbeats) and "
        "settled and released (two UPDATEs); "
        f"beat's runs stop starting batches after 20 s, so a pass this size takes "
        f"{-(-statistics.median(passes) // 20):.0f} run(s)",
        "no target; the first row's baseline is the least a resend of the same deliveries costs, for scale",
    ]
    return {"R_reconcile": report.rows_figure(TITLE, rows, reps, notes)}


def main() -> int:
    import argparse

    from bench.world import world

    parser = argparse.ArgumentParser(prog="python -m bench.reconcile_pass", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{EVENTS_QUICK:,} events instead of {EVENTS:,}")
    args = parser.parse_args()

    def say(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    with world(say=say) as (env, sink):
        figures = measure(env, sink, quick=args.quick, say=say)
    print(report.markdown_table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
