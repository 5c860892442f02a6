"""A per-client-IP limit on sign-up attempts, shared by every web process (a token bucket in Redis).

Over the limit, the sign-up form answers 429 with ``Retry-After``. When Redis
cannot be reached the limit is not applied (and the failure is logged): a
sign-up must not fail because a protective side system is down.

The client is ``REMOTE_ADDR``. Behind a reverse proxy that is the proxy's
address, so every visitor would share one budget: pass the client's address
with the PROXY protocol (gunicorn ``--proxy-protocol``), see docs/security.md.
A client-sent X-Forwarded-For is never trusted here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import wraps

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from eventbus.ratelimit import Rate, TokenBucket, parse_rate

log = logging.getLogger(__name__)

View = Callable[[HttpRequest], HttpResponse]


def _bucket(ip: str) -> TokenBucket:
    rate = parse_rate(settings.SIGNUP_RATE_LIMIT, setting="SIGNUP_RATE_LIMIT")
    return TokenBucket(f"signup-ip:{ip}", Rate(rate.tokens_per_second, float(settings.SIGNUP_RATE_BURST)))


def limit_signups_per_ip(view: View) -> View:
    """Count POSTs per client IP; refuse with 429 and Retry-After over the limit."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return view(request)
        ip = request.META.get("REMOTE_ADDR", "") or "unknown"
        try:
            wait = _bucket(ip).try_acquire()
        except redis.RedisError as exc:
            log.warning("sign-up rate limit not applied (Redis: %s)", exc)
            return view(request)
        if wait <= 0:
            return view(request)
        retry_after = max(1, math.ceil(wait))
        log.info("sign-up from %s refused for %ss: rate limit", ip, retry_after)
        response = render(request, "signups/too_many.html", {"retry_after": retry_after}, status=429)
        response["Retry-After"] = str(retry_after)
        return response

    return wrapper
