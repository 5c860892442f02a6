"""Device API tokens: random, shown once, stored as their SHA-256, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from telemetry.models import Device

# 32 random bytes: far beyond guessing, so a fast hash (no salt, no
# stretching) is enough to make a leaked table useless.
TOKEN_BYTES = 32
PREFIX = "tlm_"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def register(name: str) -> tuple[Device, str]:
    """A new device and its token; the token exists only in the return value."""
    token = new_token()
    device = Device.objects.create(name=name, token_hash=hash_token(token))
    return device, token


def rotate(device: Device) -> str:
    """A new token for ``device``; the old one stops working at once."""
    token = new_token()
    device.token_hash = hash_token(token)
    device.save(update_fields=["token_hash"])
    return token


def bearer(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def authenticate(header: str) -> Device | None:
    """The active device whose token the header carries, or None."""
    token = bearer(header)
    if token is None or len(token) > 200:
        return None
    digest = hash_token(token)
    device = Device.objects.filter(token_hash=digest, active=True).first()
    # The lookup matched on the index; compare again in constant time so no
    # code path's timing depends on how much of the digest matched.
    if device is None or not hmac.compare_digest(device.token_hash, digest):
        return None
    return device
