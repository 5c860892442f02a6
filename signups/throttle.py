"""A per-client-IP limit on sign-up attempts, shared by every web process (a token bucket in Redis).

Over the limit, the sign-up form answers 429 with ``Retry-After``. When Redis
cannot be reached, or does not answer within the request path's bound
(EVENTBUS_REQUEST_TIMEOUT, ``eventbus.doors.request_client``), the limit is
not applied (and the failure is logged): a sign-up must not fail, nor wait,
because a protective side system is down. After such a failure the process
does not ask Redis for a few seconds (eventbus/protection/failfast.py).

The client is ``REMOTE_ADDR``. Behind a reverse proxy that is the proxy's
address, so every visitor would share one budget: pass the client's address
with the PROXY protocol (gunicorn ``--proxy-protocol``), see docs/security.md.
A client-sent X-Forwarded-For is never trusted here.

An IPv6 client is limited per /64 network, not per address: one subscriber
line is usually given a whole /64 (2^64 addresses), so a per-address limit
would be no limit. An IPv4 client (or an IPv4-mapped IPv6 address,
``::ffff:a.b.c.d``) is limited per address.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Callable
from functools import wraps

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from eventbus import Rate, TokenBucket, parse_rate
from eventbus.doors import REDIS_GATE, Unavailable, request_client

log = logging.getLogger(__name__)

View = Callable[[HttpRequest], HttpResponse]


#: The prefix length an IPv6 client is limited by (one subscriber's usual assignment).
IPV6_PREFIX = 64


def client_key(remote_addr: str) -> str:
    """The bucket's name for a ``REMOTE_ADDR``: the IPv4 address, or the IPv6 address's /64 network.

    ``"2001:db8:1:2::7"`` and ``"2001:db8:1:2:ffff::1"`` share ``"2001:db8:1:2::/64"``;
    ``"::ffff:192.0.2.1"`` is ``"192.0.2.1"``; anything else (empty, a Unix socket's) is itself.
    """
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return remote_addr or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


def _bucket(client: str) -> TokenBucket:
    rate = parse_rate(settings.SIGNUP_RATE_LIMIT, setting="SIGNUP_RATE_LIMIT")
    return TokenBucket(f"signup-ip:{client}", Rate(rate.tokens_per_second, float(settings.SIGNUP_RATE_BURST)))


def limit_signups_per_ip(view: View) -> View:
    """Count POSTs per client (IPv4 address, IPv6 /64); refuse with 429 and Retry-After over the limit."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return view(request)
        ip = client_key(request.META.get("REMOTE_ADDR", ""))
        try:
            with REDIS_GATE.attempt():
                wait = _bucket(ip).try_acquire(connection=request_client())
        except Unavailable:
            return view(request)  # logged once, when Redis failed
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
