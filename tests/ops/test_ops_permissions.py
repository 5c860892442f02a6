"""The ops pages ask for the admin's model permissions (ops/views/access.py), page by page and action by action.

Each refusal is tested with a staff user holding every other ops permission,
so that the 403 comes from the one permission the page asks for; each
refused action is checked to have done nothing (no message queued, no replay
recorded, the row still there).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from eventbus.models import DeadLetter, DeadLetterReplay
from ops.status import queue_depths
from ops.views.access import PURGE_DEAD_LETTERS, REPLAY_DEAD_LETTERS, VIEW_DEAD_LETTERS, VIEW_EVENTS
from project import queues
from tests.deadletters.test_deadletters import dead_letter
from tests.observability.test_timeline import signed_up
from tests.ops_users import EVERY_OPS_PERMISSION, staff_client, staff_user

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

LIST = "/ops/deadletters/"
PAGES = {
    # name: (the permission it asks for, how to get its path from a dead letter and an event)
    "dead letter list": (VIEW_DEAD_LETTERS, lambda dl, event: LIST),
    "dead letter": (VIEW_DEAD_LETTERS, lambda dl, event: f"{LIST}{dl.pk}/"),
    "event search": (VIEW_EVENTS, lambda dl, event: "/ops/events/"),
    "event timeline": (VIEW_EVENTS, lambda dl, event: f"/ops/events/{event.pk}/"),
    "overview": (VIEW_EVENTS, lambda dl, event: "/ops/"),
    "overview json": (VIEW_EVENTS, lambda dl, event: "/ops/overview.json"),
}


def depth(queue: str) -> int:
    """Messages waiting in ``queue``, asked of the broker (Redis or RabbitMQ)."""
    return queue_depths()[queue]


def all_but(permission: str) -> list[str]:
    return [p for p in EVERY_OPS_PERMISSION if p != permission]


@pytest.mark.usefixtures("broker")
@pytest.mark.parametrize("page", PAGES)
def test_each_page_needs_its_permission(django_user_model: Any, page: str) -> None:
    # given
    permission, path_of = PAGES[page]
    path = path_of(dead_letter(), signed_up())
    without = staff_client(django_user_model, *all_but(permission), username="without")
    holder = staff_client(django_user_model, permission, username="holder")

    # when
    refused = without.get(path)
    served = holder.get(path)

    # then: 403, not a redirect to the login page the user has already passed
    assert refused.status_code == 403, refused
    assert served.status_code == 200, served


def test_a_replay_without_the_change_permission_sends_nothing(django_user_model: Any, broker: None) -> None:
    row = dead_letter()
    client = staff_client(django_user_model, *all_but(REPLAY_DEAD_LETTERS))

    response = client.post("/ops/deadletters/replay/", {"ids": [str(row.pk)]})

    assert response.status_code == 403
    assert depth(queues.ANALYTICS) == 0
    assert not DeadLetterReplay.objects.exists()


def test_a_replay_with_the_change_permission_sends(django_user_model: Any, broker: None) -> None:
    row = dead_letter()
    client = staff_client(django_user_model, REPLAY_DEAD_LETTERS)

    response = client.post("/ops/deadletters/replay/", {"ids": [str(row.pk)]})

    assert response.status_code == 302
    assert depth(queues.ANALYTICS) == 1
    assert DeadLetterReplay.objects.get().replayed_by == "olga"


def test_a_purge_without_the_delete_permission_deletes_nothing(django_user_model: Any) -> None:
    row = dead_letter()
    client = staff_client(django_user_model, *all_but(PURGE_DEAD_LETTERS))

    response = client.post("/ops/deadletters/purge/", {"ids": [str(row.pk)], "confirm": "on"})

    assert response.status_code == 403
    assert DeadLetter.objects.filter(pk=row.pk).exists()


def test_a_purge_with_the_delete_permission_deletes(django_user_model: Any) -> None:
    row = dead_letter()
    client = staff_client(django_user_model, PURGE_DEAD_LETTERS)

    response = client.post("/ops/deadletters/purge/", {"ids": [str(row.pk)], "confirm": "on"})

    assert response.status_code == 302
    assert not DeadLetter.objects.filter(pk=row.pk).exists()


def test_a_user_who_is_not_staff_is_refused_whatever_permissions_they_hold(django_user_model: Any) -> None:
    # As in the admin: the permissions open nothing without a staff account.
    row = dead_letter()
    user = staff_user(django_user_model, *EVERY_OPS_PERMISSION)
    user.is_staff = False
    user.save()
    client = Client()
    client.force_login(user)

    assert client.get(LIST).status_code == 403
    assert client.get("/ops/").status_code == 403
    assert client.post("/ops/deadletters/purge/", {"ids": [str(row.pk)], "confirm": "on"}).status_code == 403
    assert DeadLetter.objects.filter(pk=row.pk).exists()


def test_a_viewer_is_offered_only_the_actions_they_may_take(django_user_model: Any) -> None:
    row = dead_letter()
    viewer = staff_client(django_user_model, VIEW_DEAD_LETTERS, VIEW_EVENTS, username="viewer")
    operator = staff_client(django_user_model, *EVERY_OPS_PERMISSION, username="operator")

    for path in (LIST, f"{LIST}{row.pk}/"):
        seen = viewer.get(path).text
        offered = operator.get(path).text
        assert "Replay</button>" not in seen and "Purge</button>" not in seen, path
        assert "Replay</button>" in offered and "Purge</button>" in offered, path
    # The overview links the dead letters only for those who may open them.
    without_dead_letters = staff_client(django_user_model, VIEW_EVENTS, username="events-only")
    assert f'href="{LIST}"' not in without_dead_letters.get("/ops/").text
    assert f'href="{LIST}"' in viewer.get("/ops/").text
