"""The welcome email: rendered here, sent through Django's email framework over SMTP."""

from __future__ import annotations

import smtplib
import uuid
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from eventbus.errors import PermanentError
from notifications import smtp
from signups.verification import verification_url


class TransientEmailError(Exception):
    """The provider could not take the message now (connection trouble, a 4xx answer): retry later."""


def message_id_for(event_id: uuid.UUID, kind: str) -> str:
    """A Message-ID derived from the event: a resend of the same event carries the same id,
    so a provider or a mailbox that deduplicates by Message-ID shows it once."""
    domain = urlsplit(settings.SITE_URL).hostname or "localhost"
    return f"<{kind}.{event_id}@{domain}>"


def send_welcome_email(user: AbstractBaseUser, *, event_id: uuid.UUID) -> str:
    """Send the welcome email with the verification link; returns its Message-ID."""
    email: str = user.email  # type: ignore[attr-defined]
    context = {"email": email, "verify_url": verification_url(user.pk, email)}
    message_id = message_id_for(event_id, "welcome")
    message = EmailMultiAlternatives(
        subject="Welcome! Please verify your email address",
        body=render_to_string("notifications/welcome.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[email],
        headers={"Message-ID": message_id, "X-Event-ID": str(event_id)},
    )
    message.attach_alternative(render_to_string("notifications/welcome.html", context), "text/html")
    try:
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
