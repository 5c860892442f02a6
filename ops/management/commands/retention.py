"""``manage.py retention``: every table that grows, its row count, oldest row and retention.

    retention            the table, then each table's reason
    retention --purge    first run one bounded purge of the tables beat's eventbus.purge_expired owns

A command of its own rather than a section of ``eventbus_status``: it counts
every table in full (the ledger, the outbox, results can hold millions of
rows), which is fine by hand and wrong in ``eventbus_status --watch``'s
redraw every few seconds or in the ops page's JSON that shares its snapshot.
EXPIRED is what the next runs will delete: a number that keeps growing means
the purge does not keep up (see docs/operations.md, "Retention").
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from eventbus import ops_api
from ops.management.commands.eventbus_status import table


def kept_for(period: timedelta | None) -> str:
    if period is None:
        return "kept"
    if period % timedelta(days=1) == timedelta(0):
        days = period.days
        return f"{days} day" + ("s" if days != 1 else "")
    return f"{period.total_seconds():g} s"


def render(states: list[ops_api.TableState]) -> list[str]:
    now = timezone.now()
    lines = table(
        ("TABLE", "ROWS", "OLDEST", "AGE", "EXPIRED", "RETENTION", "SETTING", "PURGED BY"),
        [
            (
                s.table,
                s.rows,
                None if s.oldest is None else f"{s.oldest:%Y-%m-%d %H:%M}",
                None if s.oldest is None else f"{(now - s.oldest) / timedelta(days=1):.1f} d",
                s.expired,
                kept_for(s.keep_for),
                s.setting,
                s.purged_by or None,
            )
            for s in states
        ],
        numeric=(1, 3, 4),
    )
    lines += ["", "WHY"]
    lines += [f"{s.table}: {s.why}" for s in states]
    return lines


class Command(BaseCommand):
    help = "Show every growing table's row count, oldest row and retention; --purge runs one bounded purge first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--purge", action="store_true", help="run one bounded purge (what beat's eventbus.purge_expired does)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["purge"]:
            deleted = ops_api.purge_expired()
            self.stdout.write(
                "purged: " + (", ".join(f"{name} {count}" for name, count in deleted.items()) or "nothing to purge")
            )
            self.stdout.write("")
        self.stdout.write("\n".join(render(ops_api.retention_states())))
