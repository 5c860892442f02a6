"""The events the sign-up flow produces. Payloads carry ids, never secrets or tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventbus import event_type, upcaster

#: How a person signed up: the sign-up form, or ``manage.py seed_demo``.
WEB = "web"
SEED = "seed"


@event_type("user.signed_up", version=2)
@dataclass(frozen=True)
class UserSignedUp:
    """Version 2 added ``channel``, how the person signed up (WEB or SEED)."""

    user_id: int
    channel: str


@upcaster("user.signed_up", from_version=1)
def _signed_up_on_the_web(payload: dict[str, Any]) -> dict[str, Any]:
    """Version 1 did not record the channel: it is read as the sign-up form, the one channel real people
    use (a version-1 sign-up by seed_demo is read as web too: its message cannot tell)."""
    return {**payload, "channel": WEB}


@event_type("user.email_verified", version=1)
@dataclass(frozen=True)
class UserEmailVerified:
    user_id: int


@event_type("user.verification_requested", version=1)
@dataclass(frozen=True)
class VerificationRequested:
    """A person asked for a new verification link. The consumer makes the link from the
    user id (signups/verification.py): no token or address travels in the event."""

    user_id: int


def aggregate_of(user_id: int) -> str:
    return f"user:{user_id}"
