"""One SMTP connection per worker process (and thread), kept open across sends.

Opening a connection costs a TCP handshake, the server's greeting, EHLO (and,
with a real provider, STARTTLS and AUTH) and a QUIT at the end: more round
trips than the message itself. Bulk senders keep their connection open; so
does this, per process and thread (a forked pool process opens its own, a
thread never shares one). A connection the server closed in the meantime
(idle timeout, restart) shows on the next send, which is tried once more on a
fresh connection; after any other failure the connection is dropped and the
next send opens a new one.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import threading
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend

from notifications import pipelining

_local = threading.local()
T = TypeVar("T")

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def send(message: EmailMessage) -> None:
    """Send ``message`` over this thread's open connection; raises what Django's backend raises."""

    def deliver(connection: BaseEmailBackend) -> None:
        message.connection = connection
        message.send()

    _over_open_connection(deliver)


def sends_over_smtp() -> bool:
    """Whether the configured backend is Django's SMTP backend (and ``send_raw`` can be used)."""
    return settings.EMAIL_BACKEND == SMTP_BACKEND


def send_raw(from_email: str, to: list[str], message: bytes) -> pipelining.Refusals:
    """Send a message already serialized (notifications/mime.py) over this thread's open SMTP connection.

    What Django's SMTP backend does with a message, after serializing it:
    ``sendmail`` on its ``smtplib.SMTP``, opened (and reopened) the same way
    as ``send``'s; pipelined (notifications/pipelining.py) when the server
    offers it. Raises smtplib's errors, as that backend does; returns the
    recipients refused while others were accepted (``sendmail``'s answer),
    which Django's backend drops.
    """
    return _over_open_connection(
        lambda connection: pipelining.sendmail(connection.connection, from_email, to, message)  # type: ignore[attr-defined]
    )


def _over_open_connection(deliver: Callable[[BaseEmailBackend], T]) -> T:
    """Run ``deliver`` on this thread's connection; once more on a fresh one if the reused one had gone stale."""
    connection, reused = _connection()
    try:
        return deliver(connection)
    except smtplib.SMTPServerDisconnected:
        discard()
        if not reused:
            raise
    except BaseException:
        discard()
        raise
    # The reused connection had gone stale (closed by the server meanwhile): once more, on a fresh one.
    connection, _ = _connection()
    try:
        return deliver(connection)
    except BaseException:
        discard()
        raise


def discard() -> None:
    """Close this thread's connection (if any); the next send opens a new one."""
    connection = getattr(_local, "connection", None)
    _local.connection = None
    if connection is not None:
        with contextlib.suppress(smtplib.SMTPException, OSError):  # it is being thrown away
            connection.close()


def _connection() -> tuple[BaseEmailBackend, bool]:
    """This thread's connection, and whether it was open before (it may have gone stale)."""
    # A connection inherited across fork is the parent's; one made for other
    # settings (tests change the server) is for another server.
    owner = (os.getpid(), settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT)
    connection = getattr(_local, "connection", None)
    if connection is not None and getattr(_local, "owner", None) == owner:
        return connection, True
    if connection is not None and getattr(_local, "owner", (None,))[0] == os.getpid():
        discard()
    connection = get_connection()
    connection.open()
    _local.connection, _local.owner = connection, owner
    return connection, False
