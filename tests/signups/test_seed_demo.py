"""``manage.py seed_demo``: demo users through the real sign-up path, events like real sign-ups."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from devinbox.sink import SmtpSink
from eventbus.models import OutboxEvent, ProcessedEvent
from signups.management.commands import seed_demo
from signups.models import Account
from tests.brokers import dead_broker_url, using_broker
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

SECRET = "Tr0ub4dor&3-never-to-be-seen"


class Terminal(io.StringIO):
    """Captured output that says it is a terminal, as a person's shell would."""

    def isatty(self) -> bool:
        return True


def seed(*args: str, stdout: io.StringIO | None = None) -> tuple[str, str]:
    out, err = stdout or io.StringIO(), io.StringIO()
    call_command("seed_demo", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.usefixtures("broker")
def test_it_signs_up_n_users_with_n_events_and_never_prints_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # given: every password it makes is one we know
    monkeypatch.setattr(seed_demo, "new_password", lambda: SECRET)

    # when
    out, err = seed("5")

    # then: five users, each with an account and one dispatched user.signed_up event
    users = list(get_user_model().objects.all())
    assert len(users) == 5
    assert all(re.fullmatch(r"demo-[0-9a-f]{12}@example\.com", u.email) for u in users)
    assert all(u.check_password(SECRET) for u in users)
    assert Account.objects.count() == 5
    events = OutboxEvent.objects.filter(type="user.signed_up")
    assert events.count() == 5
    assert set(events.values_list("status", flat=True)) == {OutboxEvent.Status.DISPATCHED}
    assert {e.payload["channel"] for e in events} == {"seed"}
    assert SECRET not in out + err
    # and a summary that names the run's request id, shared by its events
    request_id = re.search(r"request id: (seed-[0-9a-f]+)", out).group(1)  # type: ignore[union-attr]
    assert set(events.values_list("correlation_id", flat=True)) == {request_id}
    assert "users: 5 signed up, 0 verified" in out
    assert "events published: 5 (5 dispatched)" in out


@pytest.mark.usefixtures("broker")
def test_a_verify_fraction_verifies_that_share_through_the_service() -> None:
    out, _ = seed("4", "--verify-fraction", "0.5")

    assert Account.objects.filter(email_verified_at__isnull=False).count() == 2
    assert OutboxEvent.objects.filter(type="user.signed_up").count() == 4
    assert OutboxEvent.objects.filter(type="user.email_verified").count() == 2
    assert "users: 4 signed up, 2 verified" in out


@pytest.mark.usefixtures("broker")
def test_the_default_is_twenty_users() -> None:
    seed()
    assert get_user_model().objects.count() == 20


@pytest.mark.usefixtures("broker")
def test_a_terminal_gets_a_progress_bar_and_a_pipe_only_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seed_demo, "new_password", lambda: SECRET)

    terminal, _ = seed("3", stdout=Terminal())
    piped, _ = seed("3")

    assert "signing up  [" in terminal and "\r" in terminal
    assert "[" not in piped and "\r" not in piped
    assert "signed up 3 demo users" in terminal and "signed up 3 demo users" in piped
    assert SECRET not in terminal + piped


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(CommandError, match="from 0 to 1"):
        seed("2", "--verify-fraction", "1.5")
    with pytest.raises(CommandError, match="from 0 to 1"):
        seed("2", "--verify-fraction", "half")
    with pytest.raises(CommandError, match="negative"):
        seed("-1")
    assert not get_user_model().objects.exists()


def test_with_the_broker_down_the_events_wait_in_the_outbox() -> None:
    with using_broker(dead_broker_url()):
        out, _ = seed("2")

    assert get_user_model().objects.count() == 2
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {OutboxEvent.Status.PENDING}
    assert "events published: 2 (2 pending)" in out
    assert "the relay sends them" in out


def test_running_workers_process_the_seeded_events(worker: Any, smtp_sink: SmtpSink) -> None:
    seed("3", "--verify-fraction", "1")

    # three welcome emails and three analytics rows per event type
    wait_for(lambda: ProcessedEvent.objects.count() == 9, what="nine deliveries")
    wait_for(lambda: len(smtp_sink.messages) == 3, what="three welcome emails")
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == sorted(
        get_user_model().objects.values_list("email", flat=True)
    )


@pytest.mark.usefixtures("broker")
def test_events_the_broker_took_read_dispatched_even_when_their_marks_are_gathered(settings: Any) -> None:
    # given: dispatched marks written by the background writer, as outside the tests
    settings.EVENTBUS_MARK_BATCH_SECONDS = 60

    # when
    out, _ = seed("3")

    # then: the summary waited for no writer round: every event reads dispatched
    assert "events published: 3 (3 dispatched)" in out, out
    assert "pending" not in out
