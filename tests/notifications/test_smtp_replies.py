"""SMTP replies classified by their code (notifications/replies.py): a 4yz is retried, a 5yz dead-lettered.

Through the real sink (devinbox/sink.py) and a real worker, for each command
that can be refused (MAIL, RCPT, DATA), with and without PIPELINING (the
pipelined path, notifications/pipelining.py, and smtplib's own sendmail).
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from devinbox.sink import SmtpSink
from eventbus.contract.errors import PermanentError
from eventbus.models import DeadLetter, ProcessedEvent
from eventbus.observability import counters
from notifications import replies, smtp
from notifications.provider import email_breaker
from project import queues
from tests.conftest import running_worker, wait_for
from tests.factories import sign_up_via_client

WELCOME = "notifications.send_welcome_email"
STAGES = ["MAIL", "RCPT", "DATA"]
GREYLISTED = "451 4.7.1 Greylisted, try again later"
NO_SUCH_USER = "550 5.1.1 No such user here"


def patience() -> float:
    """Long enough for the first retry's backoff (at most the base delay) and a loaded machine."""
    return float(django_settings.EVENTBUS_RETRY_BASE_DELAY) + 20.0


@pytest.fixture(params=[True, False], ids=["pipelining", "no-pipelining"])
def sink(request: pytest.FixtureRequest, broker: None, smtp_sink: SmtpSink, redis_prefix: str) -> Iterator[SmtpSink]:
    """The sink, offering PIPELINING or not; this test's own breaker and counters (redis_prefix)."""
    smtp_sink.pipelining = request.param
    smtp.discard()
    yield smtp_sink
    smtp.discard()


def welcome_sent() -> bool:
    return ProcessedEvent.objects.filter(subscriber=WELCOME).exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stage", STAGES)
def test_a_4xx_is_retried_and_the_email_arrives_once(sink: SmtpSink, client: Client, stage: str) -> None:
    # given: a provider that greylists the next send at this stage
    sink.refuse(stage, GREYLISTED, times=1)

    # when: someone signs up
    assert sign_up_via_client(client).status_code == 302
    with running_worker(queues.NOTIFICATIONS, queues.DEAD_LETTER):
        wait_for(welcome_sent, timeout=patience(), what="the welcome email sent")

    # then: refused once, retried once, delivered once, nothing dead-lettered
    assert sink.refusals == 1
    assert len(sink.messages) == 1
    assert counters.read(counters.RETRIES).get(WELCOME) == 1
    assert not DeadLetter.objects.exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stage", STAGES)
def test_a_5xx_is_dead_lettered_on_its_first_attempt_with_the_reason(
    sink: SmtpSink, client: Client, stage: str
) -> None:
    # given: a provider that refuses for good at this stage
    sink.refuse(stage, NO_SUCH_USER)

    # when: someone signs up
    assert sign_up_via_client(client).status_code == 302
    with running_worker(queues.NOTIFICATIONS, queues.DEAD_LETTER):
        letter = wait_for(
            lambda: DeadLetter.objects.filter(subscriber=WELCOME).first(), timeout=patience(), what="a dead letter"
        )

    # then: one attempt, no retry, and the dead letter says which command was refused and how
    assert letter.kind == "permanent"
    assert letter.attempts == 1
    assert "PermanentError" in letter.exception_type
    assert stage in letter.exception_message and NO_SUCH_USER in letter.exception_message
    assert sink.refusals == 1
    assert not sink.messages
    assert counters.read(counters.RETRIES).get(WELCOME) is None


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_recipient_refused_for_now_counts_for_the_breaker(sink: SmtpSink, client: Client) -> None:
    # given: a provider that answers 451 to every RCPT until told otherwise
    sink.refuse("RCPT", GREYLISTED)

    assert sign_up_via_client(client).status_code == 302
    with running_worker(queues.NOTIFICATIONS, queues.DEAD_LETTER):
        # then: each refusal is a failure for the breaker (a 5xx is not: the provider is up)
        wait_for(lambda: email_breaker().state().consecutive_failures >= 1, timeout=patience(), what="a failure")
        # and once the provider takes mail again, the retry delivers it
        sink.accept()
        wait_for(welcome_sent, timeout=patience(), what="the welcome email sent")
    assert len(sink.messages) == 1
    assert not DeadLetter.objects.exists()


# The classification itself, one reply family at a time, as smtplib raises them.


@pytest.mark.parametrize(
    ("exc", "stage"),
    [
        (smtplib.SMTPSenderRefused(451, b"4.3.0 try later", "a@example.com"), "MAIL"),
        (smtplib.SMTPRecipientsRefused({"b@example.com": (451, b"4.7.1 greylisted")}), "RCPT"),
        (smtplib.SMTPDataError(452, b"4.3.1 insufficient storage"), "DATA"),
        (smtplib.SMTPRecipientsRefused({"b@example.com": (421, b"4.4.2 going away")}), "RCPT"),
    ],
)
def test_4yz_replies_are_transient(exc: OSError, stage: str) -> None:
    error = replies.failure(exc)
    assert isinstance(error, replies.TransientEmailError)
    assert stage in str(error)


@pytest.mark.parametrize(
    ("exc", "stage"),
    [
        (smtplib.SMTPSenderRefused(553, b"5.1.8 bad sender", "a@example.com"), "MAIL"),
        (smtplib.SMTPRecipientsRefused({"b@example.com": (550, b"5.1.1 no such user")}), "RCPT"),
        (smtplib.SMTPDataError(554, b"5.7.1 rejected"), "DATA"),
    ],
)
def test_5yz_replies_are_permanent(exc: OSError, stage: str) -> None:
    error = replies.failure(exc)
    assert isinstance(error, PermanentError)
    assert stage in str(error)


def test_several_refused_recipients_are_transient_while_one_may_still_pass() -> None:
    mixed = {"a@example.com": (550, b"5.1.1 no such user"), "b@example.com": (451, b"4.7.1 greylisted")}
    error = replies.failure(smtplib.SMTPRecipientsRefused(mixed))
    assert isinstance(error, replies.TransientEmailError)
    assert "550" in str(error) and "451" in str(error)
    # and no address in the reason (it ends up in dead letters and logs)
    assert "@" not in str(error)

    final = {"a@example.com": (550, b"5.1.1 no such user"), "b@example.com": (554, b"5.7.1 no")}
    assert isinstance(replies.failure(smtplib.SMTPRecipientsRefused(final)), PermanentError)


def test_connection_trouble_is_transient() -> None:
    for exc in (smtplib.SMTPServerDisconnected("gone"), ConnectionRefusedError(111, "refused"), TimeoutError()):
        assert isinstance(replies.failure(exc), replies.TransientEmailError)


def test_a_send_that_reached_some_recipients_logs_each_refusal(caplog: Any) -> None:
    with caplog.at_level("WARNING", logger="notifications.replies"):
        replies.note_partly_refused({"a@example.com": (451, b"4.7.1 greylisted")}, recipients=3)
    assert "sent to 2 of 3 recipients; one refused for now: 451 4.7.1 greylisted" in caplog.text
    assert "a@example.com" not in caplog.text
