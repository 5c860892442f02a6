"""The email provider's protection: its rate limit and its circuit breaker, shared by every worker.

Built on each use from settings, so a changed setting (or a test's override)
applies at once; the state itself lives in Redis.
"""

from __future__ import annotations

from django.conf import settings

from eventbus import CircuitBreaker, WindowLimiter

PROVIDER = "smtp"


def email_limiter() -> WindowLimiter:
    """EMAIL_RATE_LIMIT for the whole cluster, in any window, as the provider counts it."""
    return WindowLimiter.for_rate(
        PROVIDER, settings.EMAIL_RATE_LIMIT, setting="EMAIL_RATE_LIMIT", guard=settings.EMAIL_RATE_LIMIT_GUARD
    )


def email_breaker() -> CircuitBreaker:
    return CircuitBreaker(PROVIDER, settings.EMAIL_BREAKER_FAILURE_THRESHOLD, settings.EMAIL_BREAKER_RESET_TIMEOUT)
