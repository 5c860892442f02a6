"""``manage.py reconcile_deliveries``: send again the deliveries the broker took and never delivered."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventbus.management.progress import ProgressBar
from eventbus.operations import brokerwatch
from eventbus.operations.reconcile import MAX_SECONDS_PER_RUN, cutoff_for, due_count, open_loss, reconcile


class Command(BaseCommand):
    help = (
        "Check every sent event's deliveries against the ledger and the dead letters, and send again "
        "those without an end. Safe to run while another reconciler runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be sent again; send and change nothing"
        )
        parser.add_argument(
            "--redeliver-after",
            type=float,
            default=None,
            help=f"seconds after which a delivery without an end counts as lost "
            f"(default EVENTBUS_REDELIVER_AFTER, {settings.EVENTBUS_REDELIVER_AFTER:g})",
        )
        parser.add_argument(
            "--all",
            action="store_true",
            help=f"go on until nothing is due (default: stop starting batches after {MAX_SECONDS_PER_RUN:g}s, "
            "as beat's runs do)",
        )
        parser.add_argument("--batch", type=int, default=None, help="outbox rows per batch")

    def handle(
        self, *args: Any, dry_run: bool, redeliver_after: float | None, all: bool, batch: int | None, **options: Any
    ) -> None:
        if not dry_run:
            try:
                loss = brokerwatch.check()
            except Exception as exc:  # the broker's errors are many
                raise CommandError(f"the broker cannot be reached: {type(exc).__name__}: {exc}") from exc
            if loss is not None:
                self.stderr.write(f"broker data loss detected: {loss.reason}")
        loss = open_loss()
        if loss is not None:
            self.stdout.write(f"a broker loss at {loss.detected_at:%Y-%m-%d %H:%M:%S} UTC: every event sent before it")
        due = due_count(cutoff_for(redeliver_after))
        with ProgressBar(due, label="reconcile", stream=self.stdout) as bar:
            result = reconcile(
                dry_run=dry_run,
                redeliver_after=redeliver_after,
                batch=batch,
                max_seconds=None if all else MAX_SECONDS_PER_RUN,
                progress=bar.advance,
            )
            bar.finish(("dry run: " if dry_run else "") + result.summary())
        for missing in result.missing:
            verb = "would send again" if dry_run else "sent again"
            self.stdout.write(
                f"{verb}: {missing.event_type} {missing.event_id} (sent {missing.last_sent_at:%Y-%m-%d %H:%M:%S}) "
                f"to {', '.join(missing.subscribers)}"
            )
        if result.error:
            raise CommandError(f"broker failure: {result.error}")
