"""Dead letters in Django admin and on the ops pages (staff with the dead-letter permissions)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from eventbus.deadletters import Kind
from eventbus.models import DeadLetter, DeadLetterReplay
from ops.views.access import PURGE_DEAD_LETTERS, REPLAY_DEAD_LETTERS, VIEW_DEAD_LETTERS
from project import queues
from tests import ops_users
from tests.deadletters.test_deadletters import ANALYTICS, dead_letter, queued

pytestmark = pytest.mark.django_db

LIST = "/ops/deadletters/"


@pytest.fixture
def staff_client(django_user_model: Any) -> Client:
    """Staff holding view, change and delete on dead letters: what the list, replay and purge ask for."""
    return ops_users.staff_client(django_user_model, VIEW_DEAD_LETTERS, REPLAY_DEAD_LETTERS, PURGE_DEAD_LETTERS)


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- the ops pages -------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client: Client) -> None:
    response = client.get(LIST)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/ops/deadletters/")
    assert client.post("/ops/deadletters/replay/", {"ids": []}).status_code == 302


def test_users_who_are_not_staff_are_refused(client: Client, django_user_model: Any) -> None:
    client.force_login(django_user_model.objects.create_user("pat", password="x"))
    assert client.get(LIST).status_code == 403
    row = dead_letter()
    assert client.post("/ops/deadletters/purge/", {"ids": [str(row.pk)], "confirm": "on"}).status_code == 403
    assert DeadLetter.objects.exists()


def test_staff_see_the_list_filtered_by_query_parameters(staff_client: Client) -> None:
    kept = dead_letter()
    poison = dead_letter(kind=Kind.POISON, body=None, raw_body="not json", subscriber="", task_id="p")

    everything = staff_client.get(LIST)
    only_poison = staff_client.get(LIST, {"kind": "poison"})
    bad_age = staff_client.get(LIST, {"older_than": "soon"})

    assert everything.status_code == 200
    assert str(kept.pk) in everything.text and str(poison.pk) in everything.text
    assert str(poison.pk) in only_poison.text and str(kept.pk) not in only_poison.text
    assert "is not an age" in bad_age.text


def test_the_detail_page_shows_the_body_traceback_and_replays(staff_client: Client) -> None:
    row = dead_letter()
    raw = dead_letter(kind=Kind.POISON, body=None, raw_body="<<garbage>>", task_id="p")

    page = staff_client.get(f"{LIST}{row.pk}/")
    raw_page = staff_client.get(f"{LIST}{raw.pk}/")

    assert page.status_code == 200
    assert "Traceback (most recent call last)" in page.text and "user.signed_up" in page.text
    assert "Never replayed." in page.text
    assert "&lt;&lt;garbage&gt;&gt;" in raw_page.text  # escaped, never rendered as markup


def test_forms_need_the_csrf_token(django_user_model: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(ops_users.staff_user(django_user_model, VIEW_DEAD_LETTERS, PURGE_DEAD_LETTERS))
    row = dead_letter()
    assert client.post("/ops/deadletters/purge/", {"ids": [str(row.pk)], "confirm": "on"}).status_code == 403
    assert DeadLetter.objects.exists()


def test_replay_by_post_sends_and_records_the_staff_user(staff_client: Client, broker: None) -> None:
    row = dead_letter()
    response = staff_client.post("/ops/deadletters/replay/", {"ids": [str(row.pk)], "next": f"{LIST}{row.pk}/"})
    assert response.status_code == 302 and response["Location"] == f"{LIST}{row.pk}/"
    assert "replayed 1 of 1 dead letters" in texts(response)[0]
    assert DeadLetterReplay.objects.get().replayed_by == "olga"
    assert queued(queues.ANALYTICS)[0]["headers"]["task"] == ANALYTICS


def test_dry_run_by_post_sends_nothing(staff_client: Client, broker: None) -> None:
    row = dead_letter()
    response = staff_client.post("/ops/deadletters/replay/", {"ids": [str(row.pk)], "dry_run": "on"})
    assert texts(response)[0].startswith("dry run: 1 of 1 dead letters would be replayed")
    assert any("the handler will run" in t for t in texts(response))
    assert queued(queues.ANALYTICS) == [] and not DeadLetterReplay.objects.exists()


def test_purge_by_post_needs_the_confirmation(staff_client: Client) -> None:
    row = dead_letter()
    refused = staff_client.post("/ops/deadletters/purge/", {"ids": [str(row.pk)]})
    assert "tick the confirmation box" in texts(refused)[0]
    assert DeadLetter.objects.exists()
    done = staff_client.post("/ops/deadletters/purge/", {"ids": [str(row.pk)], "confirm": "on"})
    assert done["Location"] == LIST
    assert texts(done)[-1] == "Purged 1 dead letter."
    assert not DeadLetter.objects.exists()


# --- Django admin --------------------------------------------------------------

CHANGELIST = "/admin/eventbus/deadletter/"


def test_admin_lists_filters_and_searches_by_event_id(admin_client: Client) -> None:
    row = dead_letter()
    other = dead_letter()
    page = admin_client.get(CHANGELIST, {"q": str(row.event_id)})
    assert page.status_code == 200
    assert str(row.pk) in page.text and str(other.pk) not in page.text
    assert admin_client.get(CHANGELIST, {"kind__exact": "poison"}).status_code == 200
    assert admin_client.get(f"{CHANGELIST}{row.pk}/change/").status_code == 200


def test_admin_replay_action_sends_and_reports(admin_client: Client, broker: None) -> None:
    row = dead_letter()
    response = admin_client.post(CHANGELIST, {"action": "replay_selected", "_selected_action": [str(row.pk)]})
    assert response.status_code == 302
    assert "replayed 1 of 1 dead letters" in texts(response)[0]
    assert DeadLetterReplay.objects.get().replayed_by == "admin"
    assert len(queued(queues.ANALYTICS)) == 1


def test_admin_dry_run_action_reports_without_sending(admin_client: Client, broker: None) -> None:
    row = dead_letter(kind=Kind.POISON, body=None, raw_body="x", task_id="p")
    response = admin_client.post(CHANGELIST, {"action": "dry_run_replay_selected", "_selected_action": [str(row.pk)]})
    messages = texts(response)
    assert (
        messages[0]
        == "dry run: 0 of 1 dead letters would be replayed, 0 of them already processed (no-op), 1 not replayable"
    )
    assert "not replayable: the body was not JSON" in messages[1]
    assert queued(queues.ANALYTICS) == []


def test_admin_purge_action(admin_client: Client) -> None:
    rows = [dead_letter(), dead_letter()]
    response = admin_client.post(
        CHANGELIST, {"action": "purge_selected", "_selected_action": [str(r.pk) for r in rows]}
    )
    assert texts(response) == ["Purged 2 dead letters."]
    assert not DeadLetter.objects.exists()
