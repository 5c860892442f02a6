"""What an SMTP failure means for the email: retry it later, or dead-letter it now. One place decides.

RFC 5321 (section 4.2.1) sorts every reply by its first digit: 4yz is a
transient negative completion ("try again later": greylisting, a provider's
throttle, a mailbox server that is full or down for a while), 5yz a permanent
one ("no such user", "message rejected"). That holds for the reply to each
command, MAIL, RCPT and DATA alike, and for each recipient, so the welcome
email is classified by the code, never by which of smtplib's exceptions
carried it:

- a 4yz, a lost or refused connection, or a reply that makes no sense at that
  step: ``TransientEmailError``, retried with backoff and counted by the
  email provider's circuit breaker (notifications/subscribers.py);
- a 5yz: ``PermanentError``, dead-lettered on its first attempt with the
  command and the server's answer as the reason.

With several recipients, each answers RCPT on its own:

- every recipient refused, at least one with a 4yz: transient. A retry may
  reach that one; one refused with a 5yz is refused again, and once the
  retries run out the dead letter names every code.
- every recipient refused with a 5yz: permanent.
- some accepted, some refused: the server took the message for the accepted
  ones, so the send counts as done and each refusal is logged as a warning
  (code and answer, no address). Retrying the whole send would deliver a
  second copy to everyone who already has one; the welcome email has one
  recipient, so it never meets this case.
"""

from __future__ import annotations

import logging
import smtplib

from eventbus import PermanentError
from notifications.pipelining import Refusals

log = logging.getLogger(__name__)


class TransientEmailError(Exception):
    """The provider could not take the message now (connection trouble, a 4xx answer): retry later."""


def is_permanent(code: int) -> bool:
    """A 5yz reply. Anything else that ends a send (4yz, or smtplib's -1 for an unreadable reply) may pass later."""
    return 500 <= code <= 599


def failure(exc: OSError) -> TransientEmailError | PermanentError:
    """The error to raise for a send that raised ``exc`` (any of smtplib's errors, or a socket's)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return _every_recipient_refused(exc.recipients)
    if isinstance(exc, smtplib.SMTPResponseException):
        reason = f"{_command(exc)} answered {_reply(exc.smtp_code, exc.smtp_error)}"
        return PermanentError(reason) if is_permanent(exc.smtp_code) else TransientEmailError(reason)
    # A closed or refused connection, a timeout, a server that stopped talking.
    return TransientEmailError(f"{type(exc).__name__}: {exc}")


def note_partly_refused(refused: Refusals, recipients: int) -> None:
    """Log the recipients refused by a send that reached the others (see the module's docstring)."""
    for code, text in refused.values():
        kind = "permanently" if is_permanent(code) else "for now"
        sent = recipients - len(refused)
        log.warning("email sent to %d of %d recipients; one refused %s: %s", sent, recipients, kind, _reply(code, text))


def _every_recipient_refused(refused: Refusals) -> TransientEmailError | PermanentError:
    codes = [code for code, _ in refused.values()]
    answers = "; ".join(_reply(code, text) for code, text in refused.values())
    reason = f"RCPT refused for {len(refused)} recipient{'s' if len(refused) != 1 else ''}: {answers}"
    if codes and all(is_permanent(code) for code in codes):
        return PermanentError(reason)
    return TransientEmailError(reason)


def _command(exc: smtplib.SMTPResponseException) -> str:
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return "MAIL"
    if isinstance(exc, smtplib.SMTPDataError):
        return "DATA"
    if isinstance(exc, smtplib.SMTPHeloError):
        return "EHLO"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "AUTH"
    if isinstance(exc, smtplib.SMTPConnectError):
        return "the greeting"
    return "the server"


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()
