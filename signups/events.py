"""The events the sign-up flow produces. Payloads carry ids, never secrets or tokens."""

from __future__ import annotations

from dataclasses import dataclass

from eventbus import event_type


@event_type("user.signed_up", version=1)
@dataclass(frozen=True)
class UserSignedUp:
    user_id: int


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
