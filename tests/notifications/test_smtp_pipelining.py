"""SMTP pipelining (notifications/pipelining.py) against real servers: the dev sink, and aiosmtpd without it."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from devinbox.sink import SinkHandler, SmtpSink, free_port
from notifications import pipelining

MESSAGE = (
    b"From: a@example.com\r\nTo: b@example.com\r\nSubject: dots\r\n\r\n"
    b"first line\r\n.a line that starts with a dot\r\n..two dots\r\nlast line"
)


class Counted(smtplib.SMTP):
    """smtplib's client, counting its writes to the server (each is one wait for an answer)."""

    writes = 0

    def send(self, s: Any) -> None:
        self.writes += 1
        super().send(s)


@pytest.fixture
def client(smtp_sink: SmtpSink) -> Iterator[Counted]:
    connection = Counted("127.0.0.1", smtp_sink.port, timeout=10)
    yield connection
    connection.close()


def test_the_sink_offers_pipelining_and_a_message_takes_two_writes(smtp_sink: SmtpSink, client: Counted) -> None:
    client.ehlo()
    assert client.has_extn("pipelining")
    client.writes = 0

    assert pipelining.sendmail(client, "a@example.com", ["b@example.com"], MESSAGE) == {}

    # MAIL, RCPT and DATA in one write, the message in the second: sendmail takes four
    assert client.writes == 2
    received = smtp_sink.messages[-1]
    assert received.mail_from == "a@example.com" and received.rcpt_tos == ("b@example.com",)
    assert received.raw.replace(b"\r\n", b"\n") == MESSAGE.replace(b"\r\n", b"\n") + b"\n"


def test_a_refused_sender_raises_as_sendmail_does_and_the_connection_still_serves(
    smtp_sink: SmtpSink, client: Counted
) -> None:
    smtp_sink.refuse("MAIL")
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        pipelining.sendmail(client, "a@example.com", ["b@example.com"], MESSAGE)
    assert refused.value.smtp_code == 451

    smtp_sink.accept()
    pipelining.sendmail(client, "a@example.com", ["c@example.com"], MESSAGE)
    assert [m.rcpt_tos for m in smtp_sink.messages] == [("c@example.com",)]


def test_a_refused_message_raises_a_data_error(smtp_sink: SmtpSink, client: Counted) -> None:
    smtp_sink.refuse("DATA")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        pipelining.sendmail(client, "a@example.com", ["b@example.com"], MESSAGE)
    assert refused.value.smtp_code == 451
    smtp_sink.accept()
    pipelining.sendmail(client, "a@example.com", ["b@example.com"], MESSAGE)
    assert len(smtp_sink.messages) == 1


class RefusingRecipients(SinkHandler):
    """A pipelining server that refuses recipients at ``refused.example``."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def refusing_server() -> Iterator[tuple[RefusingRecipients, int]]:
    handler = RefusingRecipients()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def test_refused_recipients_are_reported_as_sendmail_reports_them(
    refusing_server: tuple[RefusingRecipients, int],
) -> None:
    handler, port = refusing_server
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as connection:
        # one of two refused: sent to the other, the refusal returned
        refused = pipelining.sendmail(connection, "a@example.com", ["x@refused.example", "ok@example.com"], MESSAGE)
        assert refused == {"x@refused.example": (550, b"5.1.1 no such user")}
        assert handler.received[-1].rcpt_tos == ("ok@example.com",)

        # all refused: nothing sent, the connection reset and still usable
        with pytest.raises(smtplib.SMTPRecipientsRefused) as every:
            pipelining.sendmail(connection, "a@example.com", ["y@refused.example"], MESSAGE)
        assert set(every.value.recipients) == {"y@refused.example"}
        pipelining.sendmail(connection, "a@example.com", ["z@example.com"], MESSAGE)
    assert [m.rcpt_tos for m in handler.received] == [("ok@example.com",), ("z@example.com",)]


class PlainHandler:
    """aiosmtpd's defaults: no PIPELINING in its EHLO reply."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope.original_content or envelope.content)
        return "250 OK"


def test_a_server_without_pipelining_gets_plain_sendmail() -> None:
    handler = PlainHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with Counted("127.0.0.1", port, timeout=10) as connection:
            connection.ehlo()
            assert not connection.has_extn("pipelining")
            connection.writes = 0
            pipelining.sendmail(connection, "a@example.com", ["b@example.com"], MESSAGE)
            assert connection.writes == 4
    finally:
        controller.stop()
    assert len(handler.received) == 1
