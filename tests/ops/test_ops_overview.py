"""The ops overview (/ops/, /ops/overview.json) and ``manage.py eventbus_status``, with real parts."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from devinbox.sink import SmtpSink, free_port
from eventbus.models import OutboxEvent, ProcessedEvent
from eventbus.observability import counters
from eventbus.outbox.publish import publish
from notifications.provider import email_breaker
from ops import status
from ops.views.access import VIEW_DEAD_LETTERS, VIEW_EVENTS
from project import queues
from signups.events import UserSignedUp
from tests import ops_users
from tests.brokers import dead_broker_url, using_broker
from tests.conftest import wait_for
from tests.deadletters.test_deadletters import dead_letter
from tests.factories import navigation, sign_up_via_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

PAGE = "/ops/"
JSON = "/ops/overview.json"
EMAIL = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"


@pytest.fixture
def staff_client(django_user_model: Any) -> Client:
    """Staff holding what the overview asks for (the outbox's view permission) and the dead letters' view."""
    return ops_users.staff_client(django_user_model, VIEW_EVENTS, VIEW_DEAD_LETTERS)


@pytest.fixture
def stranded_event(broker: None) -> OutboxEvent:
    """One event committed while the broker was down: it waits in the outbox."""
    with using_broker(dead_broker_url()):
        envelope = publish(UserSignedUp(user_id=41, channel="web"), aggregate="user:41")
    return OutboxEvent.objects.get(pk=envelope.id)


@pytest.fixture
def redis_down() -> Iterator[None]:
    """The event bus's own Redis (counters, breakers, limiters) unreachable; the broker untouched.

    Undone here, not with ``settings`` (restored last): the broker's purge, undone
    before that, needs the real Redis. The client follows the URL (tests/conftest.py).
    """
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        yield


def status_output(*args: str) -> str:
    out = io.StringIO()
    call_command("eventbus_status", *args, stdout=out)
    return out.getvalue()


def row(text: str, first: str) -> list[str]:
    """The cells of the first table line that starts with ``first``."""
    lines = [line for line in text.splitlines() if line.startswith(first + " ")]
    assert lines, f"no line starts with {first!r} in:\n{text}"
    return lines[0].split()


# --- access --------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client: Client) -> None:
    for url in (PAGE, JSON):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(f"/accounts/login/?next={url}")


def test_users_who_are_not_staff_are_refused(client: Client, django_user_model: Any) -> None:
    client.force_login(django_user_model.objects.create_user("pat", password="x"))
    assert client.get(PAGE).status_code == 403
    assert client.get(JSON).status_code == 403


def test_the_menu_links_the_overview_for_staff_only(staff_client: Client) -> None:
    # (the home page's own list links every area, for anyone: the ops pages then ask to sign in)
    assert 'href="/ops/"' in navigation(staff_client.get("/").text)
    assert 'href="/ops/"' not in navigation(Client().get("/").text)


# --- the page --------------------------------------------------------------------


def test_staff_see_queues_the_waiting_outbox_and_the_breaker(
    staff_client: Client, stranded_event: OutboxEvent, settings: Any
) -> None:
    # given: one event waiting in the outbox, and the email breaker opened by failures
    breaker = email_breaker()
    for _ in range(settings.EMAIL_BREAKER_FAILURE_THRESHOLD):
        breaker.record_failure()

    # when
    response = staff_client.get(PAGE)

    # then
    assert response.status_code == 200
    page = response.text
    for queue in queues.WORKER_QUEUES:
        assert f'data-queue="{queue}"' in page
    assert '<strong id="outbox-waiting">1</strong>' in page
    assert 'data-breaker="smtp"' in page and 'class="state-open">open<' in page
    assert 'data-limiter="smtp"' in page
    assert f'data-subscriber="{EMAIL}"' in page
    assert 'href="/ops/deadletters/"' in page and 'href="/admin/"' in page
    assert f'href="{settings.FLOWER_URL}"' in page
    assert "unavailable: " not in page


def test_the_json_variant_has_the_same_snapshot(staff_client: Client, stranded_event: OutboxEvent) -> None:
    dead_letter(subscriber=ANALYTICS)

    data = staff_client.get(JSON).json()

    assert [q["name"] for q in data["queues"]] == list(queues.WORKER_QUEUES)
    assert all(q["depth"] == 0 and q["high_water_mark"] == 10_000 for q in data["queues"])
    assert data["outbox"]["waiting"] == data["outbox"]["pending"] == 1
    assert data["outbox"]["oldest_age_seconds"] >= 0
    assert [(b["name"], b["state"]) for b in data["breakers"]] == [("smtp", "closed")]
    assert data["limiters"][0]["limit"] == 10
    by_name = {s["name"]: s for s in data["subscribers"]}
    assert by_name[ANALYTICS]["dead_letters"] == 1 and by_name[EMAIL]["dead_letters"] == 0
    assert by_name[EMAIL]["counters"]["delivered"] == 0
    assert len(data["throughput"]) == status.THROUGHPUT_MINUTES
    assert sum(m["published"] for m in data["throughput"]) == 1
    assert data["unavailable"] == {}


def test_a_dead_broker_leaves_the_rest_of_the_page(staff_client: Client, stranded_event: OutboxEvent) -> None:
    with using_broker(dead_broker_url()):
        response = staff_client.get(PAGE)
        data = staff_client.get(JSON).json()

    assert response.status_code == 200
    assert 'id="queues-unavailable">Depths unavailable: OperationalError' in response.text
    assert '<strong id="outbox-waiting">1</strong>' in response.text
    assert 'class="state-closed">closed<' in response.text
    assert data["unavailable"]["queues"].startswith("unavailable: ")
    assert all(q["depth"] is None and q["workers"] is None for q in data["queues"])
    assert data["outbox"]["waiting"] == 1


def test_a_dead_redis_leaves_the_rest_of_the_page(
    staff_client: Client, stranded_event: OutboxEvent, redis_down: None
) -> None:
    response = staff_client.get(PAGE)

    assert response.status_code == 200
    for part in ("counters", "breakers", "limiters"):
        assert f'id="{part}-unavailable">' in response.text
    assert "unavailable: ConnectionError" in response.text
    assert '<strong id="outbox-waiting">1</strong>' in response.text
    assert 'id="queues-unavailable"' not in response.text


# --- the command -------------------------------------------------------------------


def test_the_command_shows_each_queue_and_the_counts_after_a_real_signup(
    worker: Any, smtp_sink: SmtpSink, client: Client
) -> None:
    # given: a sign-up whose two deliveries a real worker made
    sign_up_via_client(client)
    wait_for(lambda: ProcessedEvent.objects.count() == 2, what="both deliveries")

    # when
    text = status_output()

    # then: every queue, with the worker thread consuming the two it was given
    for queue in queues.WORKER_QUEUES:
        assert row(text, queue)[1:3] == ["0", "10000"]
    assert worker.hostname in row(text, queues.NOTIFICATIONS)
    assert worker.hostname in row(text, queues.ANALYTICS)
    assert row(text, queues.EVENTBUS)[3] == "none"
    # and one delivery each (analytics' in a batch of one), nothing else counted
    for subscriber, queue, counted in (
        (EMAIL, queues.NOTIFICATIONS, {counters.DELIVERED}),
        (ANALYTICS, queues.ANALYTICS, {counters.DELIVERED, counters.BATCHES, counters.BATCHED}),
    ):
        cells = row(text, subscriber)
        assert cells[1] == queue
        assert cells[2:] == ["1" if name in counted else "0" for name in status.COUNTER_NAMES] + ["0"]
    assert "waiting 0 (pending 0, deferred 0)" in text
    assert row(text, "smtp")[1:3] == ["closed", "0/5"]  # the breakers' table comes first
    assert "unavailable" not in text


def test_the_command_prints_json_for_machines(worker: Any, smtp_sink: SmtpSink, client: Client) -> None:
    sign_up_via_client(client)
    wait_for(lambda: ProcessedEvent.objects.count() == 2, what="both deliveries")

    data = json.loads(status_output("--json"))

    by_queue = {q["name"]: q for q in data["queues"]}
    assert set(by_queue) == set(queues.WORKER_QUEUES)
    assert by_queue[queues.NOTIFICATIONS]["workers"] == [worker.hostname]
    delivered = {s["name"]: s["counters"]["delivered"] for s in data["subscribers"]}
    assert delivered == {EMAIL: 1, ANALYTICS: 1, "telemetry.rollup": 0, "notifications.send_verification_email": 0}
    assert sum(m["processed"] for m in data["throughput"]) == 2
    assert sum(m["published"] for m in data["throughput"]) == 1


def test_the_command_says_what_is_unavailable_and_shows_the_rest(stranded_event: OutboxEvent) -> None:
    with using_broker(dead_broker_url()):
        text = status_output()

    assert "queues: unavailable: OperationalError" in text
    assert row(text, queues.NOTIFICATIONS) == [queues.NOTIFICATIONS, "-", "10000", "-"]
    assert "waiting 1 (pending 1, deferred 0)" in text


def test_watch_redraws_until_interrupted(broker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("ops.management.commands.eventbus_status.time.sleep", sleep)

    lines = status_output("--json", "--watch", "2", "--workers-timeout", "0.2").strip().splitlines()

    assert naps == [2.0, 2.0]
    assert [json.loads(line)["outbox"]["waiting"] for line in lines] == [0, 0]
