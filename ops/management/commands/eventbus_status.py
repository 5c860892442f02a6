"""``manage.py eventbus_status``: the ops overview in a terminal.

    eventbus_status               aligned tables, once
    eventbus_status --json        the same snapshot as JSON (the ops page's /ops/overview.json)
    eventbus_status --watch 5     redraw every 5 seconds until Ctrl-C (with --json: one document a line)

It prints ops.status.take_snapshot(), as the page shows it; a source that
cannot be read (broker or Redis down) is printed as "unavailable: <reason>"
and the rest is still shown. The exit status is 0 either way: the command
reports, it does not judge. When no worker answers, a warning on stderr says
which broker was asked: a terminal that is not looking at the running system
(another Redis, see project/runfile.py) shows up there rather than as zeros.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from kombu.utils.url import maybe_sanitize_url

from ops import status
from ops.snapshot import Snapshot

CLEAR_SCREEN = "\x1b[H\x1b[2J"

COUNTER_HEADERS = {
    "delivered": "DELIVERED",
    "duplicates": "DUPLICATES",
    "retries": "RETRIES",
    "dead_lettered": "DEAD-LETTERED",
    "shed": "SHED",
    "deferred": "DEFERRED",
    "stale": "STALE",
    "order_waits": "ORDER WAITS",
    "rate_limit_waits": "RATE WAITS",
    "breaker_waits": "BREAKER WAITS",
}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[int] = ()) -> list[str]:
    """Lines of an aligned table: columns two spaces apart, the ``numeric`` ones right-aligned."""
    cells = [list(headers)] + [["-" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
    return lines


def render(snapshot: Snapshot) -> list[str]:
    """The snapshot as the lines the terminal shows."""
    missing = snapshot.unavailable
    lines = [f"event bus status at {snapshot.taken_at:%Y-%m-%d %H:%M:%S} UTC", ""]

    lines.append("QUEUES")
    for part in ("queues", "workers"):
        if part in missing and not (part == "workers" and missing.get("queues") == missing[part]):
            lines.append(f"{part}: {missing[part]}")
    lines += table(
        ("QUEUE", "DEPTH", "HIGH-WATER MARK", "WORKERS"),
        [
            (
                q.name,
                q.depth,
                q.high_water_mark,
                None if q.workers is None else (", ".join(q.workers) or "none"),
            )
            for q in snapshot.queues
        ],
        numeric=(1, 2),
    )

    lines += ["", "OUTBOX"]
    if snapshot.outbox is None:
        lines.append(f"outbox: {missing['outbox']}")
    else:
        o = snapshot.outbox
        lines.append(
            f"waiting {o.waiting} (pending {o.pending}, deferred {o.deferred}); "
            f"oldest waiting for {status.age(o.oldest_age_seconds)}"
        )

    lines += ["", "RECONCILIATION"]
    if snapshot.reconcile is None:
        lines.append(f"reconciliation: {missing['reconcile']}")
    else:
        r = snapshot.reconcile
        lines.append(f"sent, not yet settled {r.unsettled}; overdue {r.overdue}; broker data losses {r.broker_losses}")
        if r.last_loss_at is not None:
            recovered = (
                f"recovered at {r.last_loss_recovered_at:%Y-%m-%d %H:%M:%S}"
                if r.last_loss_recovered_at
                else "recovery under way"
            )
            lines.append(
                f"last loss at {r.last_loss_at:%Y-%m-%d %H:%M:%S} UTC, {recovered}, "
                f"{r.last_loss_redelivered} deliveries sent again"
            )

    lines += ["", "SUBSCRIBERS"]
    lines += [f"{part}: {missing[part]}" for part in ("counters", "dead_letters") if part in missing]
    names = snapshot.counter_names
    lines += table(
        ("SUBSCRIBER", "QUEUE", *(COUNTER_HEADERS.get(n, n.upper()) for n in names), "DEAD LETTERS"),
        [
            (
                s.name,
                s.queue or "-",
                *(None if s.counters is None else s.counters.get(n, 0) for n in names),
                s.dead_letters,
            )
            for s in snapshot.subscribers
        ],
        numeric=tuple(range(2, len(names) + 3)),
    )

    lines += ["", "CIRCUIT BREAKERS"]
    if snapshot.breakers is None:
        lines.append(f"breakers: {missing['breakers']}")
    elif not snapshot.breakers:
        lines.append("none")
    else:
        lines += table(
            ("BREAKER", "STATE", "FAILURES", "PROBE IN", "SUBSCRIBERS"),
            [
                (
                    b.name,
                    b.state_label,
                    f"{b.consecutive_failures}/{b.failure_threshold}",
                    None if b.probe_in_seconds is None else status.age(b.probe_in_seconds),
                    ", ".join(b.subscribers),
                )
                for b in snapshot.breakers
            ],
        )

    lines += ["", "RATE LIMITERS"]
    if snapshot.limiters is None:
        lines.append(f"limiters: {missing['limiters']}")
    elif not snapshot.limiters:
        lines.append("none")
    else:
        lines += table(
            ("LIMITER", "GRANTS IN WINDOW", "LIMIT", "WINDOW", "SUBSCRIBERS"),
            [
                (
                    lim.name,
                    lim.grants_in_window,
                    lim.limit,
                    None if lim.window_seconds is None else f"{lim.window_seconds:g}s",
                    ", ".join(lim.subscribers),
                )
                for lim in snapshot.limiters
            ],
            numeric=(1, 2),
        )

    lines += ["", "THROUGHPUT (events per second, each minute)"]
    if snapshot.throughput is None:
        lines.append(f"throughput: {missing['throughput']}")
    else:
        lines += table(
            ("MINUTE", "PUBLISHED", "PROCESSED", "PUBLISHED/S", "PROCESSED/S"),
            [
                (
                    f"{m.minute:%H:%M}" + ("" if m.seconds >= 60 else " (now)"),
                    m.published,
                    m.processed,
                    f"{m.published_per_second:.2f}",
                    f"{m.processed_per_second:.2f}",
                )
                for m in snapshot.throughput
            ],
            numeric=(1, 2, 3, 4),
        )
    return lines


def no_worker_warning(snapshot: Snapshot, workers_timeout: float) -> str | None:
    """A warning when the workers could be asked and none answered; None when one did (or asking failed,
    which the snapshot reports itself)."""
    if any(q.workers is None for q in snapshot.queues) or any(q.workers for q in snapshot.queues):
        return None
    return (
        f"warning: no worker answered within {workers_timeout:g} s on the broker at "
        f"{maybe_sanitize_url(settings.CELERY_BROKER_URL)}. Is the system running? A `make run` elsewhere "
        "writes var/run.json, which manage.py reads; else set REDIS_URL (or CELERY_BROKER_URL) to its broker."
    )


class Command(BaseCommand):
    help = "Show queues, workers, outbox, counters, breakers, rate limits and throughput of the event bus."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
        parser.add_argument(
            "--watch", type=float, metavar="SECONDS", help="print a fresh snapshot every SECONDS until Ctrl-C"
        )
        parser.add_argument(
            "--workers-timeout",
            type=float,
            default=status.WORKERS_TIMEOUT,
            metavar="SECONDS",
            help=f"how long to wait for workers to answer (default {status.WORKERS_TIMEOUT:g})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        as_json: bool = options["json"]
        watch: float | None = options["watch"]
        timeout: float = options["workers_timeout"]
        if watch is not None and watch <= 0:
            raise CommandError("--watch needs a number of seconds above zero")
        if timeout <= 0:
            raise CommandError("--workers-timeout needs a number of seconds above zero")
        if watch is None:
            self._show(as_json, timeout, clear=False)
            return
        try:
            while True:
                self._show(as_json, timeout, clear=not as_json and self.stdout.isatty())
                time.sleep(watch)
        except KeyboardInterrupt:
            self.stdout.write("")

    def _show(self, as_json: bool, workers_timeout: float, *, clear: bool) -> None:
        snapshot = status.take_snapshot(workers_timeout=workers_timeout)
        warning = no_worker_warning(snapshot, workers_timeout)
        if warning:
            self.stderr.write(warning)
        if as_json:
            self.stdout.write(json.dumps(snapshot.to_dict(), sort_keys=True))
            return
        self.stdout.write((CLEAR_SCREEN if clear else "") + "\n".join(render(snapshot)))
