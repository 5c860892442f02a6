"""``manage.py export_events``: the outbox's events as CloudEvents, one JSON object per line (JSON Lines).

    export_events [--type user.signed_up] [--since 2026-12-01T00:00Z] [--limit 10000] [--output FILE]

What another service, a data pipeline or an auditor reads of this one's
events: each in the structured JSON form of CloudEvents 1.0
(eventbus/contract/cloudevents.py), decoded first as a consumer would decode
it, so that an event of an older version comes out upcast to the current one.
Oldest first, read in batches of ``BATCH`` rows: the outbox may hold millions
and the export holds one batch. A row that does not decode is named on stderr
and left out, and the command exits 1 once it has written the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet

from eventbus.contract.cloudevents import to_cloudevent
from eventbus.contract.envelope import ENVELOPE_FIELDS, Envelope
from eventbus.contract.errors import PoisonMessage
from eventbus.models import OutboxEvent

DEFAULT_LIMIT = 10_000
BATCH = 500


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--since {text!r} is not an ISO 8601 time, e.g. 2026-12-01 or 2026-12-01T09:00Z") from None
    # A time without a zone is UTC, the project's (and the wire's) only zone.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Write the outbox's events as CloudEvents 1.0 in JSON Lines, oldest first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--type", dest="event_type", metavar="TYPE", help="only events of this type")
        parser.add_argument("--since", metavar="TIME", help="only events that occurred at or after this ISO time")
        parser.add_argument(
            "--limit", type=int, default=DEFAULT_LIMIT, help=f"read at most this many events (default {DEFAULT_LIMIT})"
        )
        parser.add_argument("--output", metavar="FILE", help="write to this file instead of stdout")

    def handle(
        self, *args: Any, event_type: str | None, since: str | None, limit: int, output: str | None, **options: Any
    ) -> None:
        if limit < 1:
            raise CommandError(f"--limit must be at least 1, not {limit}")
        # The envelope's columns only: a row's bookkeeping (leases, sent_to, errors) stays in the database.
        rows = OutboxEvent.objects.only(*ENVELOPE_FIELDS).order_by("occurred_at", "id")
        if event_type:
            rows = rows.filter(type=event_type)
        if since:
            rows = rows.filter(occurred_at__gte=_moment(since))
        with self._lines(output) as write:
            written, skipped = self._export(rows[:limit], write)
        summary = f"exported {written} events" + (f", skipped {skipped} that do not decode" if skipped else "")
        self.stderr.write(summary)
        if skipped:
            raise CommandError(f"{skipped} events do not decode (named above); the rest were exported")

    def _export(self, rows: QuerySet[OutboxEvent], write: Callable[[str], object]) -> tuple[int, int]:
        written = skipped = 0
        for row in rows.iterator(chunk_size=BATCH):
            try:
                envelope = Envelope.from_dict(row.to_wire())
            except PoisonMessage as exc:
                skipped += 1
                self.stderr.write(f"skipped {row.id} ({row.type} v{row.version}): {exc}")
                continue
            write(json.dumps(to_cloudevent(envelope)))
            written += 1
        return written, skipped

    @contextmanager
    def _lines(self, output: str | None) -> Iterator[Callable[[str], object]]:
        """A writer of one line per call: to stdout, or to the file ``output``."""
        if output is None:
            yield self.stdout.write
            return
        with open(output, "w", encoding="utf-8") as stream:
            yield lambda line: stream.write(line + "\n")
