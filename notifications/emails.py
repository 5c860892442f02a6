"""The welcome email: rendered here, built (notifications/mime.py) and sent over SMTP (notifications/smtp.py)."""

from __future__ import annotations

import smtplib
import uuid
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from eventbus.errors import PermanentError
from notifications import mime, smtp
from signups.verification import verification_url

WELCOME_SUBJECT = "Welcome! Please verify your email address"


class TransientEmailError(Exception):
    """The provider could not take the message now (connection trouble, a 4xx answer): retry later."""


def message_id_for(event_id: uuid.UUID, kind: str) -> str:
    """A Message-ID derived from the event: a resend of the same event carries the same id,
    so a provider or a mailbox that deduplicates by Message-ID shows it once."""
    domain = urlsplit(settings.SITE_URL).hostname or "localhost"
    return f"<{kind}.{event_id}@{domain}>"


def send_welcome_email(user_id: int, email: str, *, event_id: uuid.UUID) -> str:
    """Send user ``user_id`` the welcome email at ``email``, with the verification link; returns its Message-ID."""
    context = {"email": email, "verify_url": verification_url(user_id, email)}
    message_id = message_id_for(event_id, "welcome")
    text = render_to_string("notifications/welcome.txt", context)
    html = render_to_string("notifications/welcome.html", context)
    headers = {"Message-ID": message_id, "X-Event-ID": str(event_id)}
    # Over SMTP, the message as bytes from notifications/mime.py when it can
    # write it (plain ASCII); Django's message otherwise, and with any other
    # backend (the console, files, tests' in-memory outbox).
    raw = None
    if smtp.sends_over_smtp():
        raw = mime.alternative(
            WELCOME_SUBJECT,
            settings.DEFAULT_FROM_EMAIL,
            email,
            text,
            html,
            headers,
            localtime=settings.EMAIL_USE_LOCALTIME,
        )
    try:
        if raw is not None:
            smtp.send_raw(settings.DEFAULT_FROM_EMAIL, [email], raw)
        else:
            message = EmailMultiAlternatives(
                subject=WELCOME_SUBJECT, body=text, from_email=settings.DEFAULT_FROM_EMAIL, to=[email], headers=headers
            )
            message.attach_alternative(html, "text/html")
            smtp.send(message)
    except smtplib.SMTPResponseException as exc:
        if 400 <= exc.smtp_code < 500:
            raise TransientEmailError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        raise PermanentError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentError(f"recipient refused: {exc.recipients!r}") from exc
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
        raise TransientEmailError(f"{type(exc).__name__}: {exc}") from exc
    return message_id
