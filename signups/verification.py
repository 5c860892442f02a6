"""Email verification links: signed, expiring, bound to the address they were sent to.

The token is made when the email is rendered (by the notifications worker) and
never travels in an event, a task argument or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.urls import reverse

_SALT = "signups.verify-email"


@dataclass(frozen=True)
class VerificationClaim:
    user_id: int
    email: str


class InvalidToken(Exception):
    """The link is malformed, tampered with, or expired; the message says which for a person."""


def make_token(user_id: int, email: str) -> str:
    return signing.dumps({"u": user_id, "e": email}, salt=_SALT, compress=True)


def verification_url(user_id: int, email: str) -> str:
    """The absolute link a person clicks in the welcome email."""
    return settings.SITE_URL + reverse("signups:verify", args=[make_token(user_id, email)])


def read_token(token: str) -> VerificationClaim:
    try:
        data = signing.loads(token, salt=_SALT, max_age=settings.SIGNUPS_VERIFICATION_MAX_AGE)
    except signing.SignatureExpired:
        raise InvalidToken("This verification link has expired. Ask for a new one below.") from None
    except signing.BadSignature:
        raise InvalidToken("This verification link is not valid. Check that you copied all of it.") from None
    try:
        return VerificationClaim(user_id=int(data["u"]), email=str(data["e"]))
    except (KeyError, TypeError, ValueError):
        raise InvalidToken("This verification link is not valid.") from None
