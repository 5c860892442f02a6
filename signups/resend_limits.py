"""Limits on requests for a new verification link: per client IP, and per address.

Two token buckets in Redis (eventbus/protection/tokenbucket.py), shared by every web process:

- **per client IP** (``SIGNUPS_RESEND_RATE_LIMIT``/``_BURST``): someone trying
  many addresses from one place. Over it the page answers 429 with
  ``Retry-After``, whatever the address: that says nothing about accounts.
- **per address** (``SIGNUPS_RESEND_ADDRESS_LIMIT``): someone flooding one
  mailbox from many places. Over it no email is sent, and the answer is the
  same page as when one is: a 429 here would be an answer about the address.
  The bucket is kept for every address asked for, existing or not, under a
  hash of it (Redis holds no addresses).

When Redis cannot be reached, or does not answer within the request path's
bound, neither limit is applied and the failure is logged, as for the sign-up
limit (signups/throttle.py, through the same fail-fast gate): asking for a
link must not fail or hang because a protective side system is down; the
email provider's own limit (notifications/provider.py) still holds.
"""

from __future__ import annotations

import hashlib
import logging
import math

import redis
from django.conf import settings
from django.http import HttpRequest

from eventbus import Rate, TokenBucket, parse_rate
from eventbus.doors import REDIS_GATE, Unavailable, request_client
from signups.services import normalize_email
from signups.throttle import client_key

log = logging.getLogger(__name__)


def _ip_bucket(ip: str) -> TokenBucket:
    rate = parse_rate(settings.SIGNUPS_RESEND_RATE_LIMIT, setting="SIGNUPS_RESEND_RATE_LIMIT")
    return TokenBucket(
        f"verify-resend-ip:{ip}", Rate(rate.tokens_per_second, float(settings.SIGNUPS_RESEND_RATE_BURST))
    )


def _address_bucket(email: str) -> TokenBucket:
    # One token: the first request for an address is sent at once, the next only
    # after 1/rate (20 minutes at "3/h"); a person rarely needs more.
    rate = parse_rate(settings.SIGNUPS_RESEND_ADDRESS_LIMIT, setting="SIGNUPS_RESEND_ADDRESS_LIMIT")
    digest = hashlib.sha256(normalize_email(email).encode()).hexdigest()[:32]
    return TokenBucket(f"verify-resend-address:{digest}", Rate(rate.tokens_per_second, 1.0))


def _wait(bucket: TokenBucket, what: str) -> float:
    """Take a token, bounded like every request-path call; 0 (no limit applied) when Redis fails."""
    try:
        with REDIS_GATE.attempt():
            return bucket.try_acquire(connection=request_client())
    except Unavailable:
        return 0  # logged once, when Redis failed
    except redis.RedisError as exc:
        log.warning("verification link limit %s not applied (Redis: %s)", what, exc)
        return 0


def client_wait(request: HttpRequest) -> int:
    """Take a token for the request's client (IPv4 address, IPv6 /64): 0, or the whole seconds it must wait."""
    ip = client_key(request.META.get("REMOTE_ADDR", ""))
    wait = _wait(_ip_bucket(ip), "per client")
    if wait <= 0:
        return 0
    retry_after = max(1, math.ceil(wait))
    log.info("verification link request from %s refused for %ss: rate limit", ip, retry_after)
    return retry_after


def address_allowed(email: str) -> bool:
    """Take a token for this address (existing or not); False when it has had its share."""
    return _wait(_address_bucket(email), "per address") <= 0


def address_interval_minutes() -> int:
    """Minutes between two links to one address, for the page that says so."""
    rate = parse_rate(settings.SIGNUPS_RESEND_ADDRESS_LIMIT, setting="SIGNUPS_RESEND_ADDRESS_LIMIT")
    return max(1, math.ceil(1 / rate.tokens_per_second / 60))
