"""What docs/security.md promises, with real parts: CSRF, staff-only pages, no secrets anywhere, Redis AUTH.

Covered elsewhere and not repeated here: a POST without a CSRF token is
refused (tests/signups/test_signups.py), the ops forms need the token
(tests/deadletters/test_deadletters_web.py), Flower answers 401 without and 200 with its
login (tests/project/test_run_command.py, against the real Flower the run command
starts), a pickled message is refused (tests/delivery/test_pipeline.py), and the
production settings (tests/project/test_deploy.py).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.signals import before_task_publish
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core import serializers
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.resolvers import RegexPattern, RoutePattern
from django.utils.regex_helper import normalize
from django_celery_results.models import TaskResult

from analytics.models import AnalyticsEvent
from devinbox.sink import SmtpSink, free_port
from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.redis import client as redis_client
from project import queues
from tests import bounds
from tests.brokers import using_broker
from tests.conftest import REPO, broker_is_redis, wait_for, worker_env, worker_process
from tests.environment import start_redis_server
from tests.factories import PASSWORD, sign_up_via_client

# --- CSRF ----------------------------------------------------------------------------------

# Views that take requests from machines, not from a browser with a session:
# the load balancer's probes, Prometheus's scrape, and the devices' readings API,
# whose only credential is the Authorization header (never a cookie, which is
# what a cross-site request would carry; tests/telemetry/test_api_unit.py).
# Nothing else may opt out.
CSRF_EXEMPT = {"healthz", "readyz", "metrics", "post_readings"}


def url_patterns(resolver: URLResolver | None = None, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    """Every leaf pattern of the URLconf with the route or regex text that leads to it."""
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            yield from url_patterns(entry, prefix + str(entry.pattern))
        else:
            yield prefix + str(entry.pattern), entry


@pytest.mark.django_db
def test_the_token_the_form_renders_is_accepted() -> None:
    # The counterpart of tests/signups/test_signups.py's refusal: with checks enforced,
    # the form's own token gets the sign-up through (so the 403 there is CSRF's).
    client = Client(enforce_csrf_checks=True)
    form = client.get("/signup/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.content.decode()).group(1)  # type: ignore[union-attr]

    response = client.post(
        "/signup/",
        {"csrfmiddlewaretoken": token, "email": "csrf@example.com", "password": PASSWORD, "password_confirm": PASSWORD},
    )

    assert response.status_code == 302
    assert OutboxEvent.objects.filter(type="user.signed_up").count() == 1


def test_no_view_opts_out_of_csrf_but_the_probes() -> None:
    exempt = {pattern.name for _, pattern in url_patterns() if getattr(pattern.callback, "csrf_exempt", False)}
    assert exempt <= CSRF_EXEMPT, f"views exempt from CSRF: {sorted(exempt - CSRF_EXEMPT)}"


# --- staff-only pages -------------------------------------------------------------------------

STAFF_ONLY = ("/ops/", "/admin/")
# The login page is the way in; logout shows nothing and sends the visitor back to it.
PUBLIC = {"admin:login", "admin:logout"}


def _candidates() -> list[str]:
    """Sample values for path parameters: an integer, a UUID, and every app label (the admin's app pages)."""
    return ["1", str(uuid.UUID(int=1)), *sorted({m._meta.app_label for m in apps.get_models()})]


def _fill_route(pattern: RoutePattern) -> str:
    def value(match: re.Match[str]) -> str:
        converter = pattern.converters[match.group("parameter")]
        for candidate in _candidates():
            if re.fullmatch(converter.regex, candidate):
                return candidate
        raise AssertionError(f"no sample value for {match.group(0)} in {pattern}")

    return re.sub(r"<(?:(?P<converter>[^>:]+):)?(?P<parameter>[^>]+)>", value, str(pattern))


def _fill_regex(pattern: RegexPattern) -> str:
    for template, parameters in normalize(pattern.regex.pattern):
        for values in itertools.product(_candidates(), repeat=len(parameters)):
            text = template % dict(zip(parameters, values, strict=True))
            match = pattern.regex.search(text)
            if match and match.end() == len(text):
                return text
    raise AssertionError(f"no sample path for {pattern}")


def sample_paths(resolver: URLResolver | None = None, prefix: str = "/") -> Iterator[str]:
    """One concrete path per URL pattern, its converters and groups filled with sample values."""
    for entry in (resolver or get_resolver()).url_patterns:
        pattern = entry.pattern
        piece = _fill_route(pattern) if isinstance(pattern, RoutePattern) else _fill_regex(pattern)  # type: ignore[arg-type]
        if isinstance(entry, URLResolver):
            yield from sample_paths(entry, prefix + piece)
        else:
            yield prefix + piece


def staff_only_paths() -> list[str]:
    """Every page under /ops/ and /admin/ but the login and logout, as the URLconf declares them today."""
    paths = [p for p in sample_paths() if p.startswith(STAFF_ONLY) and resolve(p).view_name not in PUBLIC]
    assert len({resolve(p).view_name for p in paths}) > 20, "the walk found too few pages to be right"
    return paths


def refusals(client: Client, expect: dict[str, tuple[int, str]]) -> list[str]:
    """GET and POST every staff-only page; what is wrong, given the (status, Location prefix) each prefix expects.

    A method a page does not take may be answered 405 before its guard runs
    (``@require_GET`` outside ``@staff_required``): that serves nothing. But at
    least one method of each page must meet the guard.
    """
    wrong = []
    for path in staff_only_paths():
        status, location = next(v for k, v in expect.items() if path.startswith(k))
        guarded = False
        for method in (client.get, client.post):
            response = method(path)
            got = (response.status_code, response.get("Location", ""))
            if got[0] == status and got[1].startswith(location):
                guarded = True
            elif got[0] != 405:
                wrong.append(f"{method.__name__.upper()} {path} ({resolve(path).view_name}): {got}")
        if not guarded:
            wrong.append(f"{path} ({resolve(path).view_name}): no method met the guard")
    return wrong


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_log_in_from_every_staff_page(client: Client) -> None:
    # The ops pages send them to the site's sign-in page (LOGIN_URL); Django admin to its own.
    assert refusals(client, {"/ops/": (302, "/accounts/login/?next=/"), "/admin/": (302, "/admin/login/?next=/")}) == []


@pytest.mark.django_db
def test_users_who_are_not_staff_are_refused_every_staff_page(client: Client, django_user_model: Any) -> None:
    client.force_login(django_user_model.objects.create_user("pat", password="x"))
    # The ops pages say 403; Django admin shows its login page, which says "not authorized".
    assert refusals(client, {"/ops/": (403, ""), "/admin/": (302, "/admin/login/?next=/")}) == []


@pytest.mark.django_db
def test_staff_without_permissions_are_refused_every_ops_page(client: Client, django_user_model: Any) -> None:
    # Staff opens nothing by itself: each ops page asks for the admin's model permission (ops/views/access.py),
    # as each model's admin page does. 403, never the login page the user has already passed.
    client.force_login(django_user_model.objects.create_user("pat", password="x", is_staff=True))
    wrong = []
    for path in (p for p in staff_only_paths() if p.startswith("/ops/")):
        answers = {method.__name__: method(path).status_code for method in (client.get, client.post)}
        if 403 not in answers.values() or set(answers.values()) - {403, 405}:
            wrong.append(f"{path}: {answers}")
    assert wrong == []


@pytest.mark.django_db
def test_a_superuser_gets_past_the_guard_of_every_staff_page(admin_client: Client) -> None:
    # The control for the two tests above: the refusals come from the guards, not from broken pages.
    # (A page may still say 404 for a sample id, or 403 itself: the admin's autocomplete without its parameters.)
    for path in staff_only_paths():
        response = admin_client.get(path)
        assert not response.get("Location", "").startswith(("/admin/login/", "/accounts/login/")), path
        if path.startswith("/ops/"):
            assert response.status_code != 403, path


# --- no secrets in events, messages, results, rows or logs --------------------------------


class Lines(logging.Handler):
    """Every log record, formatted with its traceback, as a handler on the root logger sees it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[Lines]:
    """Log records of every logger at DEBUG and up for the length of a test (worker threads included)."""
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """Each task message as it leaves for the broker: task name, headers and body."""
    messages: list[dict[str, Any]] = []

    def capture(sender: str | None = None, body: Any = None, headers: Any = None, **kwargs: Any) -> None:
        messages.append({"task": sender, "headers": headers, "body": body})

    before_task_publish.connect(capture, weak=False)
    try:
        yield messages
    finally:
        before_task_publish.disconnect(capture)


def database_rows() -> str:
    """Every row of every model but the user's (which holds the password hash by design), as JSON."""
    user_model = get_user_model()
    return "\n".join(
        serializers.serialize("json", model._default_manager.all())
        for model in apps.get_models()
        if model is not user_model
    )


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_no_secret_reaches_an_event_a_message_a_result_a_row_or_a_log(
    worker: Any,
    smtp_sink: SmtpSink,
    client: Client,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    log_lines: Lines,
    published: list[dict[str, Any]],
) -> None:
    # given secrets the processes hold (no SMTP user, so the password is never sent to the sink)
    settings.SECRET_KEY = "test-secret-key-" + secrets.token_urlsafe(40)
    settings.EMAIL_HOST_PASSWORD = "smtp-password-" + secrets.token_urlsafe(16)
    flower_password = "flower-password-" + secrets.token_urlsafe(16)
    monkeypatch.setenv("FLOWER_BASIC_AUTH", f"ops:{flower_password}")

    # when a person signs up and the workers send the email and record the event
    assert sign_up_via_client(client, email="secret@example.com").status_code == 302
    wait_for(lambda: ProcessedEvent.objects.count() >= 2 and smtp_sink.messages, what="both deliveries")
    # the welcome email's result (the batched analytics subscriber stores none)
    wait_for(lambda: TaskResult.objects.filter(status="SUCCESS").exists(), what="the stored result")

    # then the verification token is in the email, and the capture saw the work
    text = smtp_sink.messages[0].message().get_body(preferencelist=("plain",)).get_content()
    token = re.search(r"/signup/verify/([^/\s]+)/", text).group(1)  # type: ignore[union-attr]
    event = OutboxEvent.objects.get()
    haystacks = {
        "event (OutboxEvent)": json.dumps([e.to_wire() for e in OutboxEvent.objects.all()], default=str),
        "task messages on the broker": json.dumps(published, default=str),
        "task results": json.dumps(list(TaskResult.objects.values()), default=str),
        "database rows": database_rows(),
        "log lines": "\n".join(log_lines.lines),
    }
    for where, haystack in haystacks.items():
        assert str(event.id) in haystack, f"the capture of {where} saw nothing"
    assert token in text
    # and no secret is anywhere else
    user = get_user_model().objects.get()
    secret_values = {
        "the password": PASSWORD,
        "the password hash": user.password.rsplit("$", 1)[-1],
        "the verification token": token,
        "the verification token's signature": token.rsplit(":", 1)[-1],
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "EMAIL_HOST_PASSWORD": settings.EMAIL_HOST_PASSWORD,
        "FLOWER_BASIC_AUTH's password": flower_password,
    }
    leaks = [
        f"{secret} in {where}"
        for secret, value in secret_values.items()
        for where, haystack in haystacks.items()
        if value in haystack
    ]
    assert leaks == []


# --- Redis with a password --------------------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A redis-server of this test's own that wants a password: (port, password)."""
    port, password = free_port(), "s3cret-" + secrets.token_hex(8)
    server = start_redis_server(port, tmp_path / "redis", "--requirepass", password)
    try:
        yield port, password
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def app_redis(settings: Any) -> Any:
    """The settings, whose ``REDIS_URL`` the test points elsewhere; the event bus's client follows it
    there and back (tests/conftest.py)."""
    return settings


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    not broker_is_redis(),
    reason="the broker here is the Redis under test; this process's broker settings were made for another broker",
)
def test_a_redis_with_a_password_works_through_redis_url(
    private_redis: tuple[int, str], app_redis: Any, smtp_sink: SmtpSink, client: Client
) -> None:
    # given the web side and a worker process both on a Redis that wants a password
    port, password = private_redis
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    app_redis.REDIS_URL = url
    env = worker_env(REDIS_URL=url, CELERY_BROKER_URL=url)
    with using_broker(url), worker_process(queues.NOTIFICATIONS, queues.ANALYTICS, name="auth", env=env) as worker:
        # when a person signs up
        assert sign_up_via_client(client, email="auth@example.com").status_code == 302

        # then the email goes out and analytics records the event, through that Redis
        wait_for(lambda: smtp_sink.messages, timeout=30, what="the welcome email")
        wait_for(lambda: AnalyticsEvent.objects.filter(type="user.signed_up").exists(), timeout=30, what="analytics")
        assert OutboxEvent.objects.get().status == OutboxEvent.Status.DISPATCHED
        # the event bus's keys (the sign-up limiter's among them) and the queues live there, under the prefix
        keys = redis.Redis.from_url(url).keys(app_redis.REDIS_KEY_PREFIX + "*")
        assert any(b"signup-ip" in k for k in keys) and any(b"_kombu.binding" in k for k in keys), keys
        # and the worker never wrote the password into its log (Celery shows it as **)
        log = Path(worker.log_path).read_text()
        assert f":**@127.0.0.1:{port}/0" in log and password not in log


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_wrong_redis_password_fails_fast_with_a_clear_error(
    private_redis: tuple[int, str], app_redis: Any, client: Client
) -> None:
    port, _ = private_redis
    url = f"redis://:wrong-password@127.0.0.1:{port}/0"
    app_redis.REDIS_URL = url

    # the event bus's client says so at once
    started = time.monotonic()
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        redis_client().ping()
    assert time.monotonic() - started < bounds.broker_refusal()

    # a sign-up still succeeds, promptly; its event waits in the outbox with the reason
    with using_broker(url):
        started = time.monotonic()
        response = sign_up_via_client(client, email="wrongpw@example.com")
        took = time.monotonic() - started
    assert response.status_code == 302
    assert took < bounds.request_with_broker_down(), f"the sign-up took {took:.1f}s"
    event = OutboxEvent.objects.get()
    assert event.status == OutboxEvent.Status.PENDING
    assert "invalid username-password pair" in event.last_error
    assert "wrong-password" not in event.last_error


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_with_a_wrong_redis_password_logs_why_and_never_gets_ready(
    private_redis: tuple[int, str], tmp_path: Path
) -> None:
    port, _ = private_redis
    url = f"redis://:wrong-password@127.0.0.1:{port}/0"
    log = tmp_path / "worker.log"
    command = ["celery", "-A", "project", "worker", "-Q", queues.ANALYTICS, "-c", "1", "--without-mingle", "-l", "INFO"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *command],
            cwd=REPO,
            env=worker_env(REDIS_URL=url, CELERY_BROKER_URL=url),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Celery keeps retrying the broker at start (broker_connection_retry_on_startup): not a
        # silent hang, each attempt logs the reason, the password masked.
        wait_for(lambda: "invalid username-password pair" in log.read_text(), timeout=20, what="the error")
        text = log.read_text()
        assert f"Cannot connect to eventbus.fastpath.broker:FailFastRedisTransport://:**@127.0.0.1:{port}/0" in text
        assert "ready." not in text and "wrong-password" not in text
        assert process.poll() is None
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
