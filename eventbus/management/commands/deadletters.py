"""``manage.py deadletters``: list, show, replay and purge dead letters from the command line.

    deadletters list [--subscriber S] [--event-type T] [--kind K] [--older-than 3d] [--newer-than 2h]
    deadletters show ID
    deadletters replay ID... | --all [filters] [--subscriber S] [--rate 5/s] [--dry-run]
    deadletters purge ID... | filters | --all  [--yes]

Every action goes through eventbus.deadletters.operations, as Django admin
and the ops pages do. A replay is recorded as made by ``cli:<os user>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet

from eventbus.deadletters import operations
from eventbus.deadletters.parsing import parse_duration, parse_rate
from eventbus.management.progress import ProgressBar
from eventbus.models import DeadLetter

REASON_WIDTH = 60


def _age(text: str) -> Any:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _rate(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _add_filters(parser: CommandParser, subscriber_flag: str) -> None:
    parser.add_argument(
        subscriber_flag, dest="of_subscriber", metavar="NAME", help="only dead letters of this subscriber"
    )
    parser.add_argument(
        "--event-type", metavar="TYPE", help="only dead letters of this event type, e.g. user.signed_up"
    )
    parser.add_argument("--kind", choices=[k for k, _ in DeadLetter.Kind.choices], help="only this kind of failure")
    parser.add_argument(
        "--older-than", type=_age, metavar="AGE", help="last failed longer ago than this, e.g. 3d, 2h, 30m"
    )
    parser.add_argument("--newer-than", type=_age, metavar="AGE", help="last failed more recently than this, e.g. 2h")


def _filtered(options: dict[str, Any]) -> QuerySet[DeadLetter]:
    return operations.filter_dead_letters(
        subscriber=options["of_subscriber"],
        event_type=options["event_type"],
        kind=options["kind"],
        older_than=options["older_than"],
        newer_than=options["newer_than"],
    )


def _has_filters(options: dict[str, Any]) -> bool:
    return any(options[name] for name in ("of_subscriber", "event_type", "kind", "older_than", "newer_than"))


def _cli_user() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a container
        return "cli:unknown"


class Command(BaseCommand):
    help = "List, show, replay and purge dead letters."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,show,replay,purge}")

        listing = actions.add_parser("list", help="a table of dead letters, newest failure first")
        _add_filters(listing, "--subscriber")
        listing.add_argument("--limit", type=int, default=100, help="show at most this many (0: all; default 100)")

        show = actions.add_parser("show", help="everything about one dead letter, its replays included")
        show.add_argument("id", type=uuid.UUID)

        replay = actions.add_parser("replay", help="send dead letters back to their subscriber")
        replay.add_argument("ids", nargs="*", type=uuid.UUID, metavar="ID")
        replay.add_argument("--all", action="store_true", help="every dead letter matching the filters")
        _add_filters(replay, "--from-subscriber")
        replay.add_argument(
            "--subscriber", dest="to_subscriber", metavar="NAME", help="replay to this subscriber instead"
        )
        replay.add_argument("--rate", type=_rate, metavar="RATE", help="at most this many per second: 5/s, 5, 120/m")
        replay.add_argument("--dry-run", action="store_true", help="send nothing; say what would happen")

        purge = actions.add_parser("purge", help="delete dead letters for good")
        purge.add_argument("ids", nargs="*", type=uuid.UUID, metavar="ID")
        _add_filters(purge, "--subscriber")
        purge.add_argument("--all", action="store_true", help="required to purge without ids or filters")
        purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        getattr(self, f"_{action}")(options)

    # --- list -------------------------------------------------------------

    def _list(self, options: dict[str, Any]) -> None:
        queryset = _filtered(options)
        total = queryset.count()
        limit = options["limit"]
        rows = list(queryset[:limit] if limit > 0 else queryset)
        if not rows:
            self.stdout.write("no dead letters")
            return
        table = [("ID", "KIND", "SUBSCRIBER", "EVENT TYPE", "REASON", "ATTEMPTS", "LAST FAILURE")]
        table += [
            (
                str(dl.id),
                dl.kind,
                dl.subscriber or "-",
                dl.event_type or "-",
                _clip(dl.reason.replace("\n", " "), REASON_WIDTH),
                str(dl.attempts),
                dl.last_failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
            for dl in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if total > len(rows):
            self.stdout.write(f"({len(rows)} of {total} shown; use --limit 0 for all)")

    # --- show -------------------------------------------------------------

    def _show(self, options: dict[str, Any]) -> None:
        try:
            dl = DeadLetter.objects.get(pk=options["id"])
        except DeadLetter.DoesNotExist:
            raise CommandError(f"no dead letter {options['id']}") from None
        fields = [
            ("id", dl.id),
            ("kind", dl.kind),
            ("subscriber", dl.subscriber or "-"),
            ("event type", dl.event_type or "-"),
            ("event id", dl.event_id or "-"),
            ("task", f"{dl.task_name or '-'} {dl.task_id}".rstrip()),
            ("queue", dl.queue or "-"),
            ("attempts", dl.attempts),
            ("first failed", dl.first_failed_at or "-"),
            ("last failed", dl.last_failed_at),
            ("stored", dl.created_at),
            ("exception", dl.exception_type or "-"),
            ("message", dl.exception_message),
        ]
        for name, value in fields:
            self.stdout.write(f"{name + ':':<14}{value}")
        if dl.body is not None:
            self.stdout.write("\nbody:")
            self.stdout.write(json.dumps(dl.body, indent=2, sort_keys=True))
        else:
            self.stdout.write("\nraw body (not JSON):")
            self.stdout.write(dl.raw_body)
        self.stdout.write("\ntraceback:")
        self.stdout.write(dl.traceback or "(none)")
        replays = list(dl.replays.all())
        self.stdout.write(f"\nreplays: {len(replays) or 'none'}")
        for r in replays:
            note = "already processed (no-op)" if r.skipped_by_ledger else "not processed yet"
            self.stdout.write(
                f"  {r.replayed_at:%Y-%m-%d %H:%M:%S} by {r.replayed_by} to {r.subscriber}: {r.task_id}; {note}"
            )

    # --- replay -----------------------------------------------------------

    def _replay(self, options: dict[str, Any]) -> None:
        dead_letters = self._select(options, verb="replay")
        with ProgressBar(dead_letters.count(), label="replay", stream=self.stdout) as bar:
            report = _replay_one_by_one(
                dead_letters,
                bar,
                by=_cli_user(),
                subscriber=options["to_subscriber"],
                rate=options["rate"],
                dry_run=options["dry_run"],
            )
            bar.finish("\n".join([*report.lines(), report.summary()]))
        if report.unsent:
            raise CommandError(f"{_count(len(report.unsent))} not sent: the broker failed")

    # --- purge ------------------------------------------------------------

    def _purge(self, options: dict[str, Any]) -> None:
        queryset = self._select(options, verb="purge")
        count = queryset.count()
        if not count:
            self.stdout.write("nothing to purge")
            return
        if not options["yes"] and not self._confirm(f"Delete {_count(count)} for good? [y/N] "):
            self.stdout.write("not purged")
            return
        with ProgressBar(count, label="purge", stream=self.stdout) as bar:
            purged = 0
            while batch := list(queryset.values_list("pk", flat=True)[: operations.PURGE_BATCH]):
                purged += operations.purge(DeadLetter.objects.filter(pk__in=batch))
                bar.advance(len(batch))
            bar.finish(f"purged {_count(purged)}")

    # --- shared -----------------------------------------------------------

    def _select(self, options: dict[str, Any], *, verb: str) -> QuerySet[DeadLetter]:
        ids: list[uuid.UUID] = options["ids"]
        if ids and (options["all"] or _has_filters(options)):
            raise CommandError(f"{verb} either the given ids or --all/filters, not both")
        if ids:
            queryset = DeadLetter.objects.filter(pk__in=ids)
            missing = sorted(str(i) for i in set(ids) - set(queryset.values_list("pk", flat=True)))
            if missing:
                raise CommandError(f"no dead letter {', '.join(missing)}")
            return queryset
        if options["all"]:
            return _filtered(options)
        if verb == "purge" and _has_filters(options):
            return _filtered(options)
        if verb == "replay":
            raise CommandError("name the dead letters to replay, or pass --all (with filters to narrow it)")
        raise CommandError("refusing to purge every dead letter: pass ids, filters, or --all")

    def _confirm(self, question: str) -> bool:
        try:
            return input(question).strip().lower() in {"y", "yes"}
        except EOFError:
            return False


def _replay_one_by_one(
    dead_letters: QuerySet[DeadLetter], bar: ProgressBar, *, rate: float | None, **options: Any
) -> operations.ReplayReport:
    """``operations.replay`` called per dead letter, so that the bar moves; the same report.

    As there: oldest failure first, paced by ``rate`` (a dead letter that is
    not replayable may cost one pause more), and nothing is sent after the
    first broker failure: the rest is reported as not attempted.
    """
    report = operations.ReplayReport(dry_run=options["dry_run"])
    for dead_letter in dead_letters.order_by("last_failed_at"):
        if report.unsent:
            reason = f"not attempted after a broker failure: {report.unsent[0].reason}"
            checked = operations.replay([dead_letter], **{**options, "dry_run": True}).items
            report.items += [dataclasses.replace(i, reason=reason) if i.replayable else i for i in checked]
        else:
            if rate and report.sent:
                operations.sleep(1.0 / rate)
            report.items += operations.replay([dead_letter], **options).items
        bar.advance()
    return report


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _count(n: int) -> str:
    return f"{n} dead letter{'' if n == 1 else 's'}"
