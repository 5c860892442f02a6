"""With DEBUG off, '*' in ALLOWED_HOSTS and an http:// SITE_URL stop the process unless a setting says they are meant;
the bus's own start checks refuse what would lose or run a delivery twice.

Each settings case runs ``manage.py check`` in a fresh process with a production
environment (tests/project/test_deploy.py's), so the settings module itself decides.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from eventbus.contract.errors import EventDeclarationError
from eventbus.contract.retry import RetryPolicy
from eventbus.operations import checks
from tests.project.test_deploy import manage, production_env


def refusal(result: object) -> str:
    """The ImproperlyConfigured line of a failed start."""
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode != 0, stderr  # type: ignore[attr-defined]
    (line,) = [line for line in stderr.splitlines() if line.startswith("django.core.exceptions.")]
    return line


@pytest.mark.parametrize("hosts", ["*", "example.com,*", " * "])
def test_a_host_wildcard_that_admits_every_host_stops_the_process(tmp_path: Path, hosts: str) -> None:
    message = refusal(manage(production_env(tmp_path, DJANGO_ALLOWED_HOSTS=hosts), "check"))

    assert "DJANGO_ALLOWED_HOSTS contains '*'" in message
    # the message says what to change
    assert "DJANGO_ALLOWED_HOSTS=example.com" in message
    assert "DJANGO_ALLOW_ANY_HOST=1" in message


def test_a_host_wildcard_is_accepted_when_the_operator_says_so(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path, DJANGO_ALLOWED_HOSTS="*", DJANGO_ALLOW_ANY_HOST="1"), "check")

    assert result.returncode == 0, result.stderr


def test_a_subdomain_pattern_is_not_a_wildcard_for_every_host(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path, DJANGO_ALLOWED_HOSTS=".example.com"), "check")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("site_url", ["http://example.com", "http://127.0.0.1:8000"])
def test_a_plain_http_site_url_stops_the_process(tmp_path: Path, site_url: str) -> None:
    message = refusal(manage(production_env(tmp_path, SITE_URL=site_url), "check"))

    assert "SITE_URL" in message
    # the message says what to change
    assert "SITE_URL=https://example.com" in message
    assert "SITE_URL_ALLOW_HTTP=1" in message


def test_a_plain_http_site_url_is_accepted_when_the_operator_says_so(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path, SITE_URL="http://example.com", SITE_URL_ALLOW_HTTP="1"), "check")

    assert result.returncode == 0, result.stderr


def test_development_keeps_its_wildcard_and_plain_http(tmp_path: Path) -> None:
    # The control: with DEBUG on, neither check applies (runserver speaks plain HTTP).
    env = production_env(tmp_path, DJANGO_DEBUG="1", DJANGO_ALLOWED_HOSTS="*", SITE_URL="http://127.0.0.1:8000")

    result = manage(env, "check")

    assert result.returncode == 0, result.stderr


# --- the bus's own start checks (eventbus/operations/checks.py) ----------------------------


def test_the_bus_refuses_queues_that_leave_out_its_own(settings: Any) -> None:
    settings.EVENTBUS_QUEUES = ("notifications", "eventbus")

    (problem,) = checks.improper(settings)

    assert "EVENTBUS_DEAD_LETTER_QUEUE ('dead_letter') is not in EVENTBUS_QUEUES" in problem
    assert "Add it to EVENTBUS_QUEUES" in problem


def test_the_bus_refuses_a_cloudevents_source_that_is_no_uri(settings: Any) -> None:
    # The rules themselves: tests/contract/test_cloudevents.py.
    settings.EVENTBUS_SOURCE = "event bus"

    (problem,) = checks.improper(settings)

    assert problem.startswith("EVENTBUS_SOURCE ('event bus') is not a URI-reference")


def test_the_bus_settings_of_this_project_pass_its_start_checks(settings: Any) -> None:
    # The control for the test above, and for every refusal that manage.py check shows elsewhere.
    assert checks.improper(settings) == []


@pytest.mark.parametrize(
    ("soft", "hard", "expected"),
    [(90.0, 60.0, "must be positive and below time_limit"), (60.0, 3600.0, "time_limit (3600s) is not below")],
)
def test_a_subscriber_whose_limits_would_run_it_twice_is_refused(soft: float, hard: float, expected: str) -> None:
    with pytest.raises(EventDeclarationError, match=re.escape(expected)):
        checks.check_declaration("tests.limits", RetryPolicy(), soft, hard)
