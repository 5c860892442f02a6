"""Failures a person causes from the browser, seen on the pages that exist, and seen to heal.

An operator (a superuser) uses the failure panel on /ops/ (DJANGO_DEBUG on);
a person signs up in a browser context of their own. The SMTP sink is the
dev sink with the classroom's failures (devinbox/faults.py), and a real
worker thread consumes every queue. Each test causes one failure and waits,
on the pages, for its pattern and then for its healing:

- the provider down: the welcome email retried, the breaker open; healed:
  the email sent, the breaker closed;
- ``refuse@``: a dead letter; replayed from /ops/deadletters/: delivered;
- ``later@``: retries with backoff on the event's timeline, then sent on its own;
- a queue paused: its deliveries wait, and it comes back on its own;
- a flood: analytics sheds what is above its mark.

A full-page screenshot of each step is kept in ``$SCREENSHOT_DIR/failures``
(else var/screenshots/failures/), for a person to look at and CI to keep.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from analytics.models import AnalyticsEvent
from devinbox import flood
from devinbox.faults import SinkFaults
from devinbox.sink import SmtpSink
from eventbus.models import OutboxEvent, ProcessedEvent
from project import queues
from tests.browser.conftest import ACTION_TIMEOUT_MS
from tests.browser.test_journey import Shots, delivery
from tests.conftest import REPO, running_worker, wait_for
from tests.factories import PASSWORD

try:
    from playwright.sync_api import Browser, Page, expect
except ImportError:  # a virtualenv older than requirements-dev.txt
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "playwright is not installed: `make install-dev` installs requirements-dev.txt", allow_module_level=True
    )

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]

# A healing shows on the pages within this time, or the test fails.
EVENTUAL_MS = 45_000
WELCOME = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"


@dataclass(frozen=True)
class Classroom:
    url: str
    sink: SmtpSink
    browser: Browser
    shot: Shots

    def at(self, path: str) -> str:
        return self.url + path


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    """Screenshots in a folder per test under ``$SCREENSHOT_DIR/failures`` (or var/screenshots/failures)."""
    root = Path(os.environ.get("SCREENSHOT_DIR") or REPO / "var" / "screenshots") / "failures"
    directory = root / request.node.name.removeprefix("test_")
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("[0-9][0-9]-*.png"):
        old.unlink()
    print(f"\nscreenshots: {directory}")
    return Shots(directory)


@pytest.fixture
def classroom(
    live_server: Any, settings: Any, debug_urls: None, broker: None, browser: Browser, shots: Shots, tmp_path: Path
) -> Iterator[Classroom]:
    """The live server, its email going to a dev sink that plays the classroom's failures; queues empty."""
    directory = tmp_path / "mail"
    with SmtpSink(port=0, directory=directory, faults=SinkFaults()) as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = sink.port
        settings.DEVINBOX_DIR = directory
        settings.SITE_URL = live_server.url
        yield Classroom(live_server.url, sink, browser, shots)


@pytest.fixture
def operator(classroom: Classroom, django_user_model: Any, page: Page) -> Page:
    """A superuser's page, logged in, on /ops/ with the failure panel."""
    django_user_model.objects.create_superuser("teacher", "teacher@example.com", PASSWORD)
    page.goto(classroom.at("/admin/login/?next=/ops/"))
    page.fill("#id_username", "teacher")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(classroom.at("/ops/"))
    expect(page.locator("#failures h2")).to_have_text("Cause a failure (DJANGO_DEBUG on)")
    return page


def sign_up(classroom: Classroom, email: str) -> Page:
    """A person signs up with ``email`` in a browser context of their own; returns their status page."""
    context = classroom.browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    person = context.new_page()
    person.goto(classroom.at("/signup/"))
    expect(person.locator("#special-addresses-help")).to_contain_text("refuse@")
    person.fill("#id_email", email)
    person.fill("#id_password", PASSWORD)
    person.fill("#id_password_confirm", PASSWORD)
    person.click("button[type=submit]")
    person.wait_for_url(classroom.at("/signup/status/"))
    return person


def timeline_of_the_sign_up(page: Page, classroom: Classroom, email: str) -> None:
    """Open the timeline of the sign-up event of ``email``'s user."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(email=email)
    event = OutboxEvent.objects.get(type="user.signed_up", aggregate=f"user:{user.pk}")
    page.goto(classroom.at(f"/ops/events/{event.pk}/"))


def steps(page: Page, subscriber: str, kind: str) -> Any:
    return page.locator(f'section.timeline[data-subscriber="{subscriber}"] li.step[data-step="{kind}"]')


def panel_says(operator: Page, text: str) -> None:
    expect(operator.locator("#failures .messages")).to_contain_text(text)


def test_provider_down_retries_and_opens_the_breaker_then_heals(
    classroom: Classroom, operator: Page, settings: Any
) -> None:
    # Two failures open the breaker; its probe comes 5 s later (the provider is built on each use).
    settings.EMAIL_BREAKER_FAILURE_THRESHOLD = 2
    settings.EMAIL_BREAKER_RESET_TIMEOUT = 5.0
    shot = classroom.shot
    email = f"down-{uuid.uuid4().hex[:8]}@example.com"

    # when: the operator takes the provider down for five minutes, and a person signs up
    operator.fill("#failure-provider input[name=seconds]", "300")
    operator.click("#failure-provider button")
    panel_says(operator, "refuses every email (451) for 300 s")
    expect(operator.locator("#provider-down")).to_be_visible()
    shot(operator, "provider-down")
    with running_worker(*queues.WORKER_QUEUES, concurrency=4):
        person = sign_up(classroom, email)

        # then: the email is retried and the breaker opens
        expect(delivery(person, WELCOME)).to_have_text("welcome email: delayed; trying again", timeout=EVENTUAL_MS)
        shot(person, "status-retrying")
        operator.goto(classroom.at("/ops/"))
        # Open, or half-open once its 5 s are up (each probe fails while the provider is down): opened either way.
        opened = operator.locator('tr[data-breaker="smtp"] td.state-open, tr[data-breaker="smtp"] td.state-half_open')
        expect(opened).to_be_visible(timeout=EVENTUAL_MS)
        shot(operator, "breaker-open")
        timeline_of_the_sign_up(operator, classroom, email)
        expect(steps(operator, WELCOME, "retried").first).to_contain_text("451")
        shot(operator, "timeline-retries")
        assert classroom.sink.messages == []

        # when: the operator heals it
        operator.goto(classroom.at("/ops/"))
        operator.click("#failure-heal button")
        panel_says(operator, "The email provider takes mail again")

        # then: the probe closes the breaker, and the email is sent
        expect(delivery(person, WELCOME)).to_have_text("welcome email: sent", timeout=EVENTUAL_MS)
        shot(person, "status-sent")
        expect(operator.locator('tr[data-breaker="smtp"] td.state-closed')).to_be_visible(timeout=EVENTUAL_MS)
        shot(operator, "breaker-closed")
        assert [m.rcpt_tos for m in classroom.sink.messages] == [(email,)]
        person.context.close()


def test_a_refused_address_is_dead_lettered_and_its_replay_delivered(classroom: Classroom, operator: Page) -> None:
    shot = classroom.shot
    email = f"refuse+{uuid.uuid4().hex[:8]}@example.com"
    with running_worker(*queues.WORKER_QUEUES, concurrency=2):
        # when: a person signs up with an address the provider refuses for good
        person = sign_up(classroom, email)

        # then: the email is dead-lettered at its first try
        expect(delivery(person, WELCOME)).to_have_text(
            "welcome email: failed; waiting for an operator", timeout=EVENTUAL_MS
        )
        shot(person, "status-dead-lettered")
        operator.goto(classroom.at("/ops/deadletters/"))
        row = operator.locator("tbody tr", has_text="550")
        expect(row).to_have_count(1)
        shot(operator, "dead-letter")

        # when: the operator replays it
        row.locator("input[name=ids]").check()
        operator.get_by_role("button", name="Replay").click()

        # then: the replay is delivered
        expect(delivery(person, WELCOME)).to_have_text("welcome email: sent", timeout=EVENTUAL_MS)
        shot(person, "status-sent-after-replay")
        assert [m.rcpt_tos for m in classroom.sink.messages] == [(email,)]
        timeline_of_the_sign_up(operator, classroom, email)
        expect(steps(operator, WELCOME, "dead_lettered")).to_have_count(1)
        expect(steps(operator, WELCOME, "replayed")).to_have_count(1)
        shot(operator, "timeline-replayed")
        person.context.close()


def test_a_later_address_is_retried_with_backoff_and_arrives_on_its_own(classroom: Classroom, operator: Page) -> None:
    shot = classroom.shot
    email = f"later+{uuid.uuid4().hex[:8]}@example.com"
    with running_worker(*queues.WORKER_QUEUES, concurrency=2):
        person = sign_up(classroom, email)
        expect(delivery(person, WELCOME)).to_have_text("welcome email: sent", timeout=EVENTUAL_MS)
        shot(person, "status-sent")
    timeline_of_the_sign_up(operator, classroom, email)
    retried = steps(operator, WELCOME, "retried")
    expect(retried).to_have_count(3)
    expect(retried.first).to_contain_text("retried (attempt 1/")
    expect(retried.last).to_contain_text("retried (attempt 3/")
    shot(operator, "timeline-backoff")


def test_a_paused_queue_holds_its_deliveries_and_comes_back_on_its_own(classroom: Classroom, operator: Page) -> None:
    shot = classroom.shot
    email = f"paused-{uuid.uuid4().hex[:8]}@example.com"
    with running_worker(*queues.WORKER_QUEUES, concurrency=2):
        # when: the operator stops the analytics workers for 15 s, and a person signs up
        operator.select_option("#failure-queue select[name=queue]", queues.ANALYTICS)
        operator.fill("#failure-queue input[name=seconds]", "15")
        operator.click("#failure-queue button")
        panel_says(operator, f"stopped consuming {queues.ANALYTICS} for 15 s")
        expect(operator.locator(f'#failures-now [data-paused="{queues.ANALYTICS}"]')).to_be_visible()
        shot(operator, "queue-paused")
        person = sign_up(classroom, email)

        # then: the email goes while analytics waits on its queue
        expect(delivery(person, ANALYTICS)).to_have_text("analytics: queued")
        expect(delivery(person, WELCOME)).to_have_text("welcome email: sent", timeout=EVENTUAL_MS)
        shot(person, "status-analytics-waiting")

        # and analytics comes back without anyone clicking again
        expect(delivery(person, ANALYTICS)).to_have_text("analytics: recorded", timeout=EVENTUAL_MS)
        shot(person, "status-analytics-recorded")
        operator.goto(classroom.at("/ops/"))
        expect(operator.locator("#failures-now")).to_contain_text("every queue is consumed")
        person.context.close()


def test_a_flood_makes_analytics_shed_above_its_mark(
    classroom: Classroom, operator: Page, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EVENTBUS_HIGH_WATER_MARKS = f"{queues.ANALYTICS}=5"
    # Each event its own commit, and the depth read at each: the sixth event finds the queue above its mark.
    settings.EVENTBUS_QUEUE_DEPTH_CACHE = 0
    monkeypatch.setattr(flood, "BATCH", 1)
    # The analytics workers pause for the flood; here for seconds, not a minute.
    monkeypatch.setattr(flood, "FLOOD_HOLD_SECONDS", 5)
    shot = classroom.shot
    with running_worker(*queues.WORKER_QUEUES, concurrency=2):
        # when
        operator.fill("#failure-flood input[name=count]", "30")
        operator.click("#failure-flood button")
        panel_says(operator, "A flood of 30 analytics events is on its way")
        shot(operator, "flood-sent")

        # then: the overview counts what analytics shed, and it records the rest once its workers are back
        shed = operator.locator(f'tr[data-counter="shed"] td[data-subscriber="{ANALYTICS}"]')
        expect(shed).not_to_have_text("0", timeout=EVENTUAL_MS)
        shot(operator, "analytics-shed")
        expect(operator.locator(f'tr[data-queue="{queues.ANALYTICS}"] td').nth(1)).to_have_text(
            "0", timeout=EVENTUAL_MS
        )
        shot(operator, "analytics-drained")

        # and: every event of the flood is either recorded or shed, once
        def recorded_and_shed() -> tuple[int, int]:
            recorded = AnalyticsEvent.objects.filter(user_id=flood.FLOOD_USER_ID).count()
            shed = ProcessedEvent.objects.filter(subscriber=ANALYTICS, outcome=ProcessedEvent.Outcome.SHED).count()
            return recorded, shed

        wait_for(lambda: sum(recorded_and_shed()) == 30, timeout=EVENTUAL_MS / 1000, what="30 recorded or shed")
        recorded, shed_rows = recorded_and_shed()
        assert recorded >= 5 and shed_rows > 0
