"""Consumers that send email."""

from __future__ import annotations

import logging

from eventbus import Envelope, RetryPolicy, subscriber
from notifications.emails import send_welcome_email as send_email
from notifications.provider import email_breaker, email_limiter
from notifications.recipients import address_of
from notifications.replies import TransientEmailError
from project import queues

log = logging.getLogger(__name__)


@subscriber(
    "user.signed_up",
    name="notifications.send_welcome_email",
    queue=queues.NOTIFICATIONS,
    label="welcome email",
    done_label="sent",
    retry=RetryPolicy(transient=(TransientEmailError,)),
    critical=True,
    limiter=email_limiter,
    breaker=email_breaker,
    # The effect is an SMTP conversation: no database transaction (on SQLite,
    # the whole database's write lock) is held open while it lasts. A resend
    # after a crash carries the same Message-ID.
    transactional=False,
)
def send_welcome_email(event: Envelope) -> None:
    """Email the new user a welcome with their verification link."""
    _email_the_user(event, "welcome email")


@subscriber(
    "user.verification_requested",
    name="notifications.send_verification_email",
    queue=queues.NOTIFICATIONS,
    label="new verification link",
    done_label="sent",
    retry=RetryPolicy(transient=(TransientEmailError,)),
    critical=True,
    limiter=email_limiter,
    breaker=email_breaker,
    # As the welcome email: an SMTP conversation, no transaction held open.
    transactional=False,
)
def send_verification_email(event: Envelope) -> None:
    """Email a person who asked for one a new verification link: the welcome email again,
    its link made now (so valid from now) and its Message-ID from this event."""
    _email_the_user(event, "verification email")


def _email_the_user(event: Envelope, what: str) -> None:
    """The welcome email to the event's user, its Message-ID from the event (the same on every resend)."""
    user_id = event.payload.user_id
    address = address_of(user_id)
    if address is None:
        # The account was deleted before we got here: nobody to write to.
        log.info("%s for event %s skipped: user %s is gone", what, event.id, user_id)
        return
    send_email(user_id, address, event_id=event.id)
