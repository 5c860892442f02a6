"""The settings a process refuses to start with, each refusal saying what to write instead.

project/settings.py reads every value from the environment and hands it here:
a mistake stops the process at start, with a message naming the variable,
rather than surfacing at the first request, email or scrape. Safe inside
settings: nothing here reads settings, and the bus's modules imported here
neither read settings nor import models when imported.
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from eventbus.operations.checks import countdown_problem, queue_type_problem, sentinel_problem
from eventbus.protection.tokenbucket import parse_rate

DEV_SECRET = "dev-insecure-secret-key-change-me-in-production-0123456789"
"""DJANGO_SECRET_KEY's development default: fine on one machine, refused with DEBUG off."""

_SECRET_HOWTO = (
    "set DJANGO_SECRET_KEY to a long random value, e.g. the output of "
    "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
)


def check_secret_key(secret_key: str, *, debug: bool) -> None:
    """With DEBUG off, refuse a key anyone could know or guess.

    Refused here rather than left to `check --deploy` (which nobody has to run).
    The thresholds are those of Django's own check, security.W009.
    """
    if not debug and secret_key == DEV_SECRET:
        raise ImproperlyConfigured(
            f"DJANGO_DEBUG is off but DJANGO_SECRET_KEY is unset (or the development default): {_SECRET_HOWTO}."
        )
    if not debug and (len(secret_key) < 50 or len(set(secret_key)) < 5 or secret_key.startswith("django-insecure-")):
        # The message describes the key, never repeats it: it may end up in a log.
        raise ImproperlyConfigured(
            f"DJANGO_DEBUG is off but DJANGO_SECRET_KEY is weak ({len(secret_key)} characters, "
            f"{len(set(secret_key))} distinct; at least 50 characters, 5 distinct and no 'django-insecure-' "
            f"prefix are needed): {_SECRET_HOWTO}."
        )


def check_allowed_hosts(allowed_hosts: list[str], *, debug: bool) -> None:
    """With DEBUG off, the host names must be written down (Django answers 400 to any other Host header)."""
    if not debug and not allowed_hosts:
        raise ImproperlyConfigured(
            "DJANGO_DEBUG is off but DJANGO_ALLOWED_HOSTS is unset or empty: set it to the host names the site "
            "answers to, comma-separated, e.g. DJANGO_ALLOWED_HOSTS=example.com,www.example.com."
        )


def check_site_url(site_url: str, *, debug: bool) -> None:
    """With DEBUG off, SITE_URL must be written down: a default would send every new user a link to 127.0.0.1."""
    if not debug and not site_url.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            "DJANGO_DEBUG is off but SITE_URL is unset or not an http(s) URL: set it to the site's public address, "
            "e.g. SITE_URL=https://example.com (the verification link in the welcome email starts with it)."
        )


def check_risky_production(
    allowed_hosts: list[str], site_url: str, *, debug: bool, allow_any_host: bool, site_url_allow_http: bool
) -> None:
    """Refuse two production settings that are legal but almost always a mistake, unless the operator means them.

    "*" in ALLOWED_HOSTS turns off Django's Host check (the only pattern that
    admits every host: a leading-dot pattern admits one domain and its
    subdomains), so a forged Host reaches password-reset links, caches and
    logs. An http:// SITE_URL sends the verification link, a bearer secret,
    over plain HTTP in every welcome email.
    """
    if not debug and "*" in allowed_hosts and not allow_any_host:
        raise ImproperlyConfigured(
            "DJANGO_DEBUG is off but DJANGO_ALLOWED_HOSTS contains '*', which admits any Host header: list the host "
            "names the site answers to instead, e.g. DJANGO_ALLOWED_HOSTS=example.com,www.example.com, or set "
            "DJANGO_ALLOW_ANY_HOST=1 if a proxy in front already checks Host."
        )
    if not debug and site_url.startswith("http://") and not site_url_allow_http:
        raise ImproperlyConfigured(
            "DJANGO_DEBUG is off but SITE_URL starts with http://: the verification link in the welcome email would "
            "travel unencrypted. Set SITE_URL=https://example.com (the site's public HTTPS address), or set "
            "SITE_URL_ALLOW_HTTP=1 if plain HTTP is meant (a private test deployment)."
        )


def check_rates(**rates: str) -> None:
    """Parse each rate ("10/s", "600/m", "36000/h"), so that a typo stops the process at start, not at first use.

    Each keyword is the setting's name, which the message of a refusal names.
    """
    for setting, rate in rates.items():
        parse_rate(rate, setting=setting)


def check_email_countdowns(email_rate_limit: str, breaker_reset_timeout: float, visibility_timeout: float) -> None:
    """Refuse email waits that Redis would turn into a second delivery.

    Tasks that meet a refusing limiter or an open breaker are rescheduled with
    that wait as countdown; one at or above the visibility timeout makes Redis
    deliver the task twice (kombu#337). The rule is the bus's (eventbus/operations/checks.py).
    """
    for setting, wait in (
        ("EMAIL_RATE_LIMIT", 1 / parse_rate(email_rate_limit, setting="EMAIL_RATE_LIMIT").tokens_per_second),
        ("EMAIL_BREAKER_RESET_TIMEOUT", breaker_reset_timeout),
    ):
        problem = countdown_problem(setting, wait, visibility_timeout)
        if problem:
            raise ImproperlyConfigured(problem)


def metrics_token(token: str, token_file: str) -> str:
    """METRICS_TOKEN, or the content of METRICS_TOKEN_FILE (a Docker or Kubernetes secret); never both."""
    if not token_file:
        return token
    if token:
        raise ImproperlyConfigured("METRICS_TOKEN and METRICS_TOKEN_FILE are both set: set one of them.")
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"METRICS_TOKEN_FILE={token_file!r} cannot be read: {exc}") from exc
    if not token:
        raise ImproperlyConfigured(f"METRICS_TOKEN_FILE={token_file!r} is empty: write the token into it.")
    return token


def check_queue_type(queue_type: str, broker_url: str) -> None:
    """EVENTBUS_QUEUE_TYPE: 'classic' or 'quorum', quorum only on RabbitMQ (rule: eventbus/operations/checks.py).

    Checked before the CELERY_* settings are derived from it: a quorum profile on Redis would
    declare queue arguments no Redis understands.
    """
    problem = queue_type_problem(queue_type, broker_url)
    if problem:
        raise ImproperlyConfigured(problem)


def check_redis_sentinel(values: dict[str, object]) -> None:
    """Refuse Sentinel settings that are incomplete or contradict REDIS_URL or CELERY_BROKER_URL.

    Each refusal says what to write instead (eventbus/sentinel.py); a password is never repeated.
    """
    problem = sentinel_problem(values)
    if problem:
        raise ImproperlyConfigured(problem)
