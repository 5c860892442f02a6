"""The welcome email: rendered here, built (notifications/mime.py) and sent over SMTP (notifications/smtp.py).

A failed send raises ``replies.TransientEmailError`` (retry later) or ``PermanentError``
(dead letter now), decided by the server's reply code (notifications/replies.py).
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from notifications import mime, replies, smtp
from signups.verification import verification_url

WELCOME_SUBJECT = "Welcome! Please verify your email address"


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
            refused = smtp.send_raw(settings.DEFAULT_FROM_EMAIL, [email], raw)
            if refused:
                replies.note_partly_refused(refused, recipients=1)
        else:
            message = EmailMultiAlternatives(
                subject=WELCOME_SUBJECT, body=text, from_email=settings.DEFAULT_FROM_EMAIL, to=[email], headers=headers
            )
            message.attach_alternative(html, "text/html")
            smtp.send(message)
    except OSError as exc:
        # smtplib's errors are OSErrors too: every failed send is classified
        # by its reply code, in one place (notifications/replies.py).
        raise replies.failure(exc) from exc
    return message_id
