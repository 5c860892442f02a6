"""``manage.py deadletters``: list, show, replay and purge, through call_command."""

from __future__ import annotations

import getpass
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from eventbus.contract.envelope import Envelope
from eventbus.deadletters import Kind
from eventbus.deadletters.parsing import parse_duration, parse_rate
from eventbus.delivery import ledger
from eventbus.models import DeadLetter, DeadLetterReplay
from project import queues
from tests.deadletters.test_deadletters import ANALYTICS, dead_letter, queued

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("deadletters", *args, stdout=out)
    return out.getvalue()


def test_parsing_ages_and_rates() -> None:
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("3d") == timedelta(days=3)
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_rate("5/s") == parse_rate("5") == 5.0
    assert parse_rate("120/m") == 2.0
    for bad in ("2 hours", "", "h"):
        with pytest.raises(ValueError, match="not an age"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="above zero"):
        parse_rate("0/s")


def test_list_prints_a_table_with_filters() -> None:
    old = dead_letter(age=timedelta(days=4))
    poison = dead_letter(kind=Kind.POISON, body=None, raw_body="x", subscriber="", task_id="p")

    everything = run("list")
    only_old = run("list", "--older-than", "3d")
    only_poison = run("list", "--kind", "poison")

    header = everything.splitlines()[0].split()
    assert header[:4] == ["ID", "KIND", "SUBSCRIBER", "EVENT"]
    assert str(old.pk) in everything and str(poison.pk) in everything
    assert str(old.pk) in only_old and str(poison.pk) not in only_old
    assert str(poison.pk) in only_poison and str(old.pk) not in only_poison
    assert "builtins.ConnectionError: database went away" in everything
    assert run("list", "--subscriber", "nobody.at_all") == "no dead letters\n"


def test_list_refuses_an_unreadable_age() -> None:
    with pytest.raises(CommandError, match="not an age"):
        run("list", "--older-than", "soon")


def test_show_prints_everything_with_the_traceback_and_replays(broker: None) -> None:
    row = dead_letter()
    run("replay", str(row.pk))

    shown = run("show", str(row.pk))

    assert f"id:           {row.pk}" in shown
    assert '"type": "user.signed_up"' in shown
    assert "ConnectionError: database went away" in shown
    assert "Traceback (most recent call last)" in shown
    assert f"by cli:{getpass.getuser()} to {ANALYTICS}" in shown


def test_replay_by_id_records_the_os_user(broker: None) -> None:
    row = dead_letter()
    out = run("replay", str(row.pk))
    assert "replayed 1 of 1" in out
    assert DeadLetterReplay.objects.get().replayed_by == f"cli:{getpass.getuser()}"
    assert len(queued(queues.ANALYTICS)) == 1


def test_replay_all_dry_run_reports_the_ledger_and_sends_nothing(broker: None) -> None:
    done = dead_letter()
    dead_letter()
    ledger.claim(Envelope.from_dict(done.body), ANALYTICS)

    out = run("replay", "--all", "--dry-run", "--rate", "5/s")

    assert f"{done.pk}: would replay to {ANALYTICS}; already processed per the ledger" in out
    assert "dry run: 2 of 2 dead letters would be replayed, 1 of them already processed" in out
    assert queued(queues.ANALYTICS) == []


def test_replay_to_another_subscriber_and_with_filters(broker: None) -> None:
    dead_letter(kind=Kind.POISON, subscriber="")
    dead_letter(kind=Kind.PERMANENT)
    out = run("replay", "--all", "--kind", "poison", "--subscriber", ANALYTICS)
    assert "replayed 1 of 1" in out


def test_replay_needs_ids_or_all_and_known_ids() -> None:
    with pytest.raises(CommandError, match="or pass --all"):
        run("replay")
    with pytest.raises(CommandError, match="no dead letter 00000000-0000-0000-0000-000000000000"):
        run("replay", "00000000-0000-0000-0000-000000000000")


def test_purge_with_filters_and_yes() -> None:
    dead_letter(age=timedelta(days=10))
    recent = dead_letter()
    assert run("purge", "--older-than", "7d", "--yes") == "purged 1 dead letter\n"
    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [recent.pk]


def test_purge_everything_needs_all(monkeypatch: pytest.MonkeyPatch) -> None:
    dead_letter()
    with pytest.raises(CommandError, match="refusing to purge every dead letter"):
        run("purge", "--yes")
    monkeypatch.setattr("builtins.input", lambda question: "n")
    assert run("purge", "--all") == "not purged\n"
    monkeypatch.setattr("builtins.input", lambda question: "yes")
    assert run("purge", "--all") == "purged 1 dead letter\n"
    assert not DeadLetter.objects.exists()
