"""The naive alternatives the publish path is measured against: no outbox, direct ``.delay()``.

What a project without an outbox would write: commit, then hand each
subscriber's task the envelope. Fast, but an event is lost when the process
dies between the commit and the send, or when the broker is down.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from eventbus.contract import registry
from signups.events import aggregate_of
from signups.models import Account
from signups.services import EmailTaken, email_taken, normalize_email

EVENT_TYPE = "user.signed_up"


def envelope(user_id: int) -> dict[str, Any]:
    """The same envelope dict the outbox sends (the wire form of ``Envelope``)."""
    return {
        "id": str(uuid.uuid4()),
        "type": EVENT_TYPE,
        "version": 2,
        "occurred_at": timezone.now().isoformat().replace("+00:00", "Z"),
        "aggregate": aggregate_of(user_id),
        "sequence": 1,
        "correlation_id": uuid.uuid4().hex,
        "causation_id": None,
        "payload": {"user_id": user_id, "channel": "web"},
    }


def send_direct(user_id: int) -> None:
    """One ``.delay()`` per subscriber of ``user.signed_up``, with the envelope."""
    wire = envelope(user_id)
    for subscription in registry.subscriptions_for(EVENT_TYPE):
        subscription.task.delay(wire)


def publish(user_id: int) -> None:
    """The naive counterpart of ``publish()`` in its own transaction: an empty commit, then two sends."""
    with transaction.atomic():
        pass
    send_direct(user_id)


def sign_up(email: str, password: str) -> AbstractBaseUser:
    """``signups.services.sign_up`` without the outbox: same checks and rows, then two sends."""
    User = get_user_model()
    email = normalize_email(email)
    with transaction.atomic():
        if email_taken(email):
            raise EmailTaken(email)
        user = User.objects.create_user(username=email, email=email, password=password)
        Account.objects.create(user=user)
    send_direct(user.pk)
    return user
