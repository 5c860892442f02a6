"""A device's token is shown once, in the admin's answer, and never travels in a cookie."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.sessions.models import Session
from django.http import HttpRequest
from django.test import Client

from telemetry import tokens
from telemetry.models import Device
from tests.telemetry.helpers import URL, batch, body

pytestmark = [pytest.mark.django_db]

TOKEN = re.compile(re.escape(tokens.PREFIX) + r"[A-Za-z0-9_-]{20,}")


@pytest.fixture
def operator(client: Client, django_user_model: Any, broker: None, redis_prefix: str) -> Client:
    client.force_login(django_user_model.objects.create_superuser("op", "op@example.com", "x"))
    return client


def readable(value: str) -> str:
    """A cookie's value, and what Django's message cookie holds (signed, base64, maybe compressed) in clear."""
    return f"{value} {CookieStorage(HttpRequest())._decode(value)!r}"


def assert_nowhere_but_the_page(client: Client, response: Any, token: str) -> None:
    """Not in any Set-Cookie of the answer, the client's cookie jar or a stored session."""
    assert all(token not in readable(morsel.value) for morsel in response.cookies.values())
    assert all(token not in readable(morsel.value) for morsel in client.cookies.values())
    assert all(token not in str(session.get_decoded()) for session in Session.objects.all())
    assert "no-store" in response["Cache-Control"]


def works(client: Client, token: str, seq: int) -> bool:
    response = client.post(
        URL, data=body(batch(seq, 1)), content_type="application/json", headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code == 202


def test_a_device_added_in_admin_shows_its_token_once_and_in_no_cookie(operator: Client) -> None:
    # when: an operator adds a device
    response = operator.post("/admin/telemetry/device/add/", {"name": "boiler-1", "active": "on"})

    # then: the answer itself is the page with the token, once
    assert response.status_code == 200
    page = response.content.decode()
    (token,) = TOKEN.findall(page)
    assert "boiler-1" in page
    # and: only its hash is stored, and it works
    assert tokens.hash_token(token) == Device.objects.get(name="boiler-1").token_hash
    assert works(Client(), token, 1)
    # and: it is in no cookie and no session, and the next page does not show it again
    assert_nowhere_but_the_page(operator, response, token)
    following = operator.get("/admin/telemetry/device/")
    assert token not in following.content.decode() and token not in str(following.cookies)


def test_a_rotated_token_is_shown_once_and_in_no_cookie(operator: Client) -> None:
    # given: two devices
    old = {name: tokens.register(name)[1] for name in ("pump-1", "pump-2")}
    devices = Device.objects.filter(name__in=old)

    # when: the operator issues both new tokens
    response = operator.post(
        "/admin/telemetry/device/",
        {"action": "rotate_tokens", "_selected_action": [str(d.pk) for d in devices]},
    )

    # then: both new tokens on the answer's page, once each; the old ones stop working
    assert response.status_code == 200
    shown = TOKEN.findall(response.content.decode())
    assert len(shown) == len(set(shown)) == 2
    assert {tokens.hash_token(t) for t in shown} == {d.token_hash for d in Device.objects.all()}
    assert not works(Client(), old["pump-1"], 1)
    for token in shown:
        assert_nowhere_but_the_page(operator, response, token)
