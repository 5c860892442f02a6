"""The welcome email's SMTP connection is opened once per thread and survives the server closing it."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.mail import EmailMessage

from devinbox.sink import SmtpSink
from notifications import smtp


@pytest.fixture
def fresh_connection() -> Iterator[None]:
    smtp.discard()
    yield
    smtp.discard()


def message(n: int) -> EmailMessage:
    return EmailMessage(subject=f"hello {n}", body="hi", from_email="a@example.com", to=[f"user{n}@example.com"])


def test_sends_share_one_connection(smtp_sink: SmtpSink, fresh_connection: None) -> None:
    before = smtp_sink.connections  # the sink's own start-up check connects once
    for n in range(3):
        smtp.send(message(n))

    assert len(smtp_sink.messages) == 3
    assert smtp_sink.connections == before + 1


def test_a_connection_the_server_closed_is_replaced_and_the_send_goes_through(
    smtp_sink: SmtpSink, fresh_connection: None
) -> None:
    before = smtp_sink.connections
    smtp.send(message(1))
    # the server (or a network device) drops the idle connection
    backend: Any = smtp._local.connection
    backend.connection.sock.shutdown(socket.SHUT_RDWR)

    smtp.send(message(2))

    assert [m.message()["Subject"] for m in smtp_sink.messages] == ["hello 1", "hello 2"]
    assert smtp_sink.connections == before + 2


def test_a_refused_message_drops_the_connection(smtp_sink: SmtpSink, fresh_connection: None) -> None:
    smtp.send(message(1))
    smtp_sink.refuse("MAIL")
    with pytest.raises(smtplib.SMTPSenderRefused):
        smtp.send(message(2))
    assert getattr(smtp._local, "connection", None) is None
