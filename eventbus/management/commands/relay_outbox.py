"""``manage.py relay_outbox``: send every pending outbox event now."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventbus.management.progress import ProgressBar
from eventbus.outbox.relay import relay, waiting_count


class Command(BaseCommand):
    help = "Send every pending outbox event to the broker. Safe to run while another relay runs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--grace",
            type=float,
            default=None,
            help=f"leave events younger than this many seconds to their on-commit dispatch "
            f"(default {settings.EVENTBUS_RELAY_GRACE:g})",
        )
        parser.add_argument("--limit", type=int, default=None, help="send at most this many events")

    def handle(self, *args: Any, grace: float | None, limit: int | None, **options: Any) -> None:
        before = waiting_count()
        with ProgressBar(before if limit is None else min(before, limit), label="relay", stream=self.stdout) as bar:
            result = relay(grace=grace, limit=limit, progress=bar.advance)
            left = waiting_count()
            bar.finish(
                f"dispatched {result.dispatched} of {before} waiting events; {result.deferred} deferred "
                f"(queue above its high-water mark); {left} still waiting"
            )
        if result.error:
            raise CommandError(f"broker failure, {result.failed} events left pending: {result.error}")
