"""The event timeline (ops/timeline.py) and its staff-only pages, /ops/events/ and /ops/events/<id>/."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from django_celery_results.models import TaskResult

from devinbox.sink import SmtpSink
from eventbus.models import DeadLetterReplay, DeliveryStep, OutboxEvent, ProcessedEvent
from eventbus.observability import status as event_status
from ops import timeline
from ops.views import timeline as views
from ops.views.access import VIEW_EVENTS
from signups.events import aggregate_of
from signups.services import sign_up, verify_email
from signups.verification import VerificationClaim
from tests import ops_users
from tests.conftest import wait_for
from tests.deadletters.test_deadletters import dead_letter
from tests.factories import PASSWORD, navigation

EMAIL = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"
Step = DeliveryStep.Step


@pytest.fixture
def staff_client(django_user_model: Any) -> Client:
    """Staff holding what the timeline asks for: the outbox's view permission."""
    return ops_users.staff_client(django_user_model, VIEW_EVENTS)


def signed_up(email: str = "ada@example.com") -> OutboxEvent:
    """A user signed up through the service; without a commit the event stays pending in the outbox."""
    user = sign_up(email, PASSWORD)
    return OutboxEvent.objects.get(aggregate=aggregate_of(user.pk), type="user.signed_up")


def dispatched(event: OutboxEvent) -> OutboxEvent:
    OutboxEvent.objects.filter(pk=event.pk).update(
        status=OutboxEvent.Status.DISPATCHED, dispatched_at=timezone.now(), dispatch_attempts=1
    )
    event.refresh_from_db()
    return event


def step(event: OutboxEvent, subscriber: str, kind: str, detail: str = "", task_id: str = "") -> DeliveryStep:
    return DeliveryStep.objects.create(
        event_id=event.id, subscriber=subscriber, step=kind, detail=detail, task_id=task_id, worker="w1@host"
    )


def story_of(event: OutboxEvent) -> timeline.EventTimeline:
    story = timeline.build(event.id)
    assert story is not None
    return story


def by_name(story: timeline.EventTimeline) -> dict[str, timeline.SubscriberStory]:
    return {s.name: s for s in story.subscribers}


# --- a real sign-up, processed by a real worker ------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_a_processed_signup_tells_its_whole_story(worker: Any, smtp_sink: SmtpSink, staff_client: Client) -> None:
    # given: a sign-up over HTTP with a request id, processed by a real worker
    visitor = Client()
    response = visitor.post(
        "/signup/",
        {"email": "grace@example.com", "password": PASSWORD, "password_confirm": PASSWORD},
        headers={"X-Request-ID": "req-timeline-1"},
    )
    assert response.status_code == 302
    wait_for(lambda: ProcessedEvent.objects.count() == 2, what="both deliveries")
    wait_for(lambda: TaskResult.objects.filter(status="SUCCESS").count() == 1, what="the email's stored result")
    event = OutboxEvent.objects.get()

    # when
    story = story_of(event)
    page = staff_client.get(f"/ops/events/{event.id}/")

    # then: both subscribers, each queued then succeeded, with worker, run time and the task's links
    # (the batched analytics subscriber stores no Celery result: its admin link is the filtered list)
    assert story.correlation_id == "req-timeline-1"
    assert story.outbox.status == "dispatched"
    assert json.loads(story.envelope_json)["id"] == str(event.id)
    subscribers = by_name(story)
    assert set(subscribers) == {EMAIL, ANALYTICS}
    for name, sub in subscribers.items():
        ledger = ProcessedEvent.objects.get(subscriber=name)
        assert [s.kind for s in sub.steps] == ["queued", "succeeded"]
        succeeded = sub.steps[-1]
        assert succeeded.worker == ledger.worker != ""
        assert succeeded.runtime_ms is not None and succeeded.runtime_ms >= 0
        assert succeeded.task is not None and succeeded.task.task_id == ledger.task_id
        if name == EMAIL:
            assert succeeded.task.status == "SUCCESS"
            result = TaskResult.objects.get(task_id=ledger.task_id)
            assert succeeded.task.admin_url == f"/admin/django_celery_results/taskresult/{result.pk}/change/"
        else:
            assert succeeded.task.status == ""
            assert not TaskResult.objects.filter(task_id=ledger.task_id).exists()
            assert succeeded.task.admin_url.endswith(f"?task_id={ledger.task_id}")
        assert succeeded.task.flower_url.endswith(f"/task/{ledger.task_id}")
        assert sub.state == "done"
    assert page.status_code == 200
    text = page.text
    assert "welcome email" in text and "analytics" in text
    assert text.count('data-step="succeeded"') == 2
    assert "req-timeline-1" in text and 'href="/ops/events/?q=req-timeline-1"' in text
    for ledger in ProcessedEvent.objects.all():
        assert ledger.worker in text
        assert f"in {ledger.runtime_ms:.1f} ms" in text
        assert f"/task/{ledger.task_id}" in text


# --- the unusual steps ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_retried_then_dead_lettered_delivery_shows_each_step_and_links_the_dead_letter(
    staff_client: Client,
) -> None:
    # given: the email failed once, was retried, then dead-lettered; analytics succeeded
    event = dispatched(signed_up())
    task_id = str(uuid.uuid4())
    step(event, EMAIL, Step.RETRIED, "TransientEmailError: 451 try later; retry 1/5 in 2.3s", task_id)
    step(event, EMAIL, Step.DEAD_LETTERED, "retries_exhausted: TransientEmailError: 451 try later", task_id)
    letter = dead_letter(body=event.to_wire(), subscriber=EMAIL, task_name=EMAIL, task_id=task_id)
    ProcessedEvent.objects.create(
        event_id=event.id,
        subscriber=ANALYTICS,
        event_type=event.type,
        aggregate=event.aggregate,
        sequence=event.sequence,
        task_id="t-analytics",
        worker="w2@host",
        runtime_ms=3.25,
    )

    # when
    story = story_of(event)
    page = staff_client.get(f"/ops/events/{event.id}/")

    # then
    email, analytics = by_name(story)[EMAIL], by_name(story)[ANALYTICS]
    assert [s.kind for s in email.steps] == ["queued", "retried", "dead_lettered"]
    retried, dead = email.steps[1], email.steps[2]
    assert retried.title == "retried (attempt 1/5, again in 2.3s)"
    assert retried.detail == "TransientEmailError: 451 try later"
    assert retried.worker == "w1@host" and retried.task is not None and retried.task.task_id == task_id
    assert retried.task.admin_url == f"/admin/django_celery_results/taskresult/?task_id={task_id}"
    assert dead.link_url == f"/ops/deadletters/{letter.pk}/"
    assert [s.kind for s in analytics.steps] == ["queued", "succeeded"]
    assert analytics.steps[-1].runtime_ms == 3.25
    assert [t.task_id for t in email.tasks] == [task_id]
    assert page.status_code == 200
    assert f'href="/ops/deadletters/{letter.pk}/"' in page.text
    assert "retried (attempt 1/5, again in 2.3s)" in page.text


@pytest.mark.django_db
def test_a_replay_names_who_replayed_it_and_a_dead_letter_without_a_step_still_shows() -> None:
    # given: a dead letter stored without its timeline step (the step is best effort), then replayed
    event = dispatched(signed_up())
    letter = dead_letter(body=event.to_wire(), subscriber=ANALYTICS, task_id="t-failed")
    replay = DeadLetterReplay.objects.create(
        dead_letter=letter, replayed_by="olga", subscriber=ANALYTICS, task_id="t-replay"
    )
    step(event, ANALYTICS, Step.REPLAYED, f"dead letter {letter.pk} by olga", "t-replay")

    # when
    analytics = by_name(story_of(event))[ANALYTICS]

    # then
    assert [s.kind for s in analytics.steps] == ["queued", "dead_lettered", "replayed"]
    replayed = analytics.steps[-1]
    assert replayed.title == "replayed by olga"
    assert replayed.link_url == f"/ops/deadletters/{letter.pk}/"
    assert replayed.task is not None and replayed.task.task_id == replay.task_id
    assert [t.task_id for t in analytics.tasks] == ["t-failed", "t-replay"]


@pytest.mark.django_db
def test_waits_are_told_apart_by_what_they_wait_for() -> None:
    event = dispatched(signed_up())
    step(event, EMAIL, Step.WAITING, "rate limit email; again in 0.40s")
    step(event, EMAIL, Step.WAITING, "circuit breaker email is open; again in 30.00s")
    step(event, ANALYTICS, Step.WAITING, f"waiting for an earlier event of {event.aggregate}; again in 1.00s")

    subscribers = by_name(story_of(event))

    assert [s.title for s in subscribers[EMAIL].steps[1:]] == [
        "waiting for a rate-limit token",
        "waiting: the circuit breaker is open",
    ]
    assert subscribers[ANALYTICS].steps[1].title == "waiting for an earlier event"


@pytest.mark.django_db
def test_a_deferred_and_shed_event_says_why_and_agrees_with_the_status_page(client: Client) -> None:
    # given: under load, the email was held in the outbox and analytics shed
    client.post("/signup/", {"email": "lin@example.com", "password": PASSWORD, "password_confirm": PASSWORD})
    event = OutboxEvent.objects.get()
    reason = "queue notifications holds 20000 messages (high-water mark 20000)"
    OutboxEvent.objects.filter(pk=event.pk).update(
        status=OutboxEvent.Status.DEFERRED, deferred_subscribers=[EMAIL], last_error=f"deferred: {reason}"
    )
    event.refresh_from_db()
    step(event, EMAIL, Step.DEFERRED, reason)
    step(event, ANALYTICS, Step.SHED, reason.replace("notifications", "analytics"))
    ProcessedEvent.objects.create(
        event_id=event.id,
        subscriber=ANALYTICS,
        outcome=ProcessedEvent.Outcome.SHED,
        event_type=event.type,
        aggregate=event.aggregate,
        sequence=event.sequence,
    )

    # when
    story = story_of(event)
    status_page = client.get("/signup/status.json").json()

    # then: the outbox says why; each delivery has its step; both pages give the same state
    assert story.outbox.status == "deferred" and story.outbox.last_error == f"deferred: {reason}"
    subscribers = by_name(story)
    assert [s.kind for s in subscribers[EMAIL].steps] == ["deferred"]
    assert [s.kind for s in subscribers[ANALYTICS].steps] == ["shed"]
    shown = {d["subscriber"]: d["state"] for d in status_page["events"][0]["deliveries"]}
    assert shown == {name: sub.state for name, sub in subscribers.items()} == {EMAIL: "deferred", ANALYTICS: "shed"}


@pytest.mark.django_db
def test_timeline_states_are_the_status_page_states() -> None:
    event = dispatched(signed_up())
    step(event, EMAIL, Step.DEAD_LETTERED, "permanent: ValueError: bad address")

    (status,) = event_status.for_aggregate(event.aggregate)
    story = story_of(event)

    assert {d.subscriber: (d.state, d.text) for d in status.deliveries} == {
        s.name: (s.state, s.state_text) for s in story.subscribers
    }


@pytest.mark.django_db
def test_a_pending_event_waits_in_the_outbox_with_its_last_error() -> None:
    event = signed_up()
    OutboxEvent.objects.filter(pk=event.pk).update(dispatch_attempts=2, last_error="OperationalError: refused")

    story = story_of(event)

    assert story.outbox.status == "pending"
    for sub in story.subscribers:
        assert [(s.kind, s.detail) for s in sub.steps] == [("pending", "OperationalError: refused")]
        assert sub.state == "pending"


@pytest.mark.django_db
def test_the_aggregate_s_other_events_are_linked_by_sequence(staff_client: Client) -> None:
    first = signed_up()
    user_id = int(first.aggregate.split(":")[1])
    verify_email(VerificationClaim(user_id=user_id, email="ada@example.com"))
    second = OutboxEvent.objects.get(type="user.email_verified")

    story_one, story_two = story_of(first), story_of(second)
    page = staff_client.get(f"/ops/events/{first.id}/")

    assert story_one.previous is None and story_one.next is not None and story_one.next.event_id == second.id
    assert story_two.previous is not None and story_two.previous.event_id == first.id and story_two.next is None
    assert [e.sequence for e in story_two.aggregate_events] == [1, 2]
    assert f'rel="next" href="/ops/events/{second.id}/"' in page.text


@pytest.mark.django_db
def test_an_unknown_event_has_no_timeline(staff_client: Client) -> None:
    assert timeline.build(uuid.uuid4()) is None
    assert timeline.build("not a uuid") is None
    assert staff_client.get(f"/ops/events/{uuid.uuid4()}/").status_code == 404


# --- search ---------------------------------------------------------------------------


def found(query: str) -> list[uuid.UUID]:
    return [e.id for e in timeline.search(query).events]


@pytest.mark.django_db
def test_search_finds_an_event_by_id_email_request_id_and_aggregate() -> None:
    event = signed_up("Mixed.Case@Example.com")
    other = signed_up("other@example.com")
    OutboxEvent.objects.filter(pk=event.pk).update(correlation_id="req-42")

    assert found(str(event.id)) == [event.id]
    assert found("mixed.case@example.com") == [event.id]
    assert found("req-42") == [event.id]
    assert found(event.aggregate) == [event.id]
    assert found("nobody@example.com") == []
    assert found("") == [other.id, event.id]  # newest first
    assert timeline.search("req-42").matched == ("request id",)


@pytest.mark.django_db
def test_search_finds_an_event_by_any_task_id_that_carried_it() -> None:
    events = [signed_up(f"t{i}@example.com") for i in range(5)]
    ledger, steps, letter, replayed, result = events
    ProcessedEvent.objects.create(
        event_id=ledger.id,
        subscriber=ANALYTICS,
        event_type=ledger.type,
        aggregate=ledger.aggregate,
        sequence=ledger.sequence,
        task_id="task-ledger",
    )
    step(steps, EMAIL, Step.RETRIED, "x; retry 1/5 in 1.0s", "task-step")
    dead_letter(body=letter.to_wire(), task_id="task-dead")
    DeadLetterReplay.objects.create(
        dead_letter=dead_letter(body=replayed.to_wire(), task_id="task-before-replay"),
        replayed_by="olga",
        subscriber=ANALYTICS,
        task_id="task-replay",
    )
    TaskResult.objects.create(
        task_id="task-result", task_name=EMAIL, status="STARTED", task_args=repr((result.to_wire(),))
    )

    assert found("task-ledger") == [ledger.id]
    assert found("task-step") == [steps.id]
    assert found("task-dead") == [letter.id]
    assert found("task-replay") == [replayed.id]
    assert found("task-result") == [result.id]
    assert timeline.search("task-result").matched == ("task id (stored task result)",)


@pytest.mark.django_db
def test_the_search_page_lists_matches_newest_first_and_paginates(
    staff_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [signed_up(f"p{i}@example.com") for i in range(3)]
    OutboxEvent.objects.update(correlation_id="req-page")

    first = staff_client.get("/ops/events/", {"q": "req-page"})
    by_email = staff_client.get("/ops/events/", {"q": "p1@example.com"})

    assert first.status_code == 200
    positions = [first.text.index(str(e.id)) for e in reversed(events)]
    assert positions == sorted(positions)
    assert "3 events" in first.text and "Matched by: request id." in first.text
    assert str(events[1].id) in by_email.text and str(events[0].id) not in by_email.text
    assert "Nothing matches" in staff_client.get("/ops/events/", {"q": "nothing-like-it"}).text

    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    second_page = staff_client.get("/ops/events/", {"q": "req-page", "page": 2})
    assert str(events[0].id) in second_page.text and str(events[2].id) not in second_page.text
    assert "Page 2 of 2" in second_page.text


# --- who may look -------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_log_in(client: Client) -> None:
    event = signed_up()
    for url in ("/ops/events/", f"/ops/events/{event.id}/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(f"/accounts/login/?next={url}")


@pytest.mark.django_db
def test_users_who_are_not_staff_are_refused(client: Client) -> None:
    event = signed_up()
    client.force_login(get_user_model().objects.create_user("pat", password="x"))
    assert client.get("/ops/events/").status_code == 403
    assert client.get(f"/ops/events/{event.id}/").status_code == 403


@pytest.mark.django_db
def test_staff_see_the_events_link_in_the_navigation(staff_client: Client, client: Client) -> None:
    # (the home page's own list links every area, for anyone: the ops pages then ask to sign in)
    assert 'href="/ops/events/"' in navigation(staff_client.get("/").text)
    assert 'href="/ops/events/"' not in navigation(client.get("/").text)
