"""Signing in: Django's LoginView at /accounts/login/, the way in that the sign-up form and the staff pages point to."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests import ops_users
from tests.factories import PASSWORD, sign_up_via_client

pytestmark = pytest.mark.django_db

SIGN_IN = "/accounts/login/"


def test_a_signed_up_person_signs_in_with_their_email_and_lands_home(client: Client) -> None:
    sign_up_via_client(client, "pat@example.com")
    visitor = Client()

    page = visitor.get(SIGN_IN)
    response = visitor.post(SIGN_IN, {"username": "pat@example.com", "password": PASSWORD})

    assert page.status_code == 200 and 'name="username"' in page.text
    assert response.status_code == 302 and response["Location"] == "/"
    assert "Sign out" in visitor.get("/").text


def test_a_wrong_password_is_refused_on_the_page(client: Client) -> None:
    sign_up_via_client(client, "pat@example.com")

    response = Client().post(SIGN_IN, {"username": "pat@example.com", "password": "not " + PASSWORD})

    assert response.status_code == 200
    assert 'id="signin-errors"' in response.text


def test_a_taken_address_links_to_the_sign_in_page(client: Client) -> None:
    sign_up_via_client(client, "pat@example.com")

    again = Client().post("/signup/", {"email": "pat@example.com", "password": PASSWORD, "password_confirm": PASSWORD})

    assert again.status_code == 400
    assert "Try signing in instead." in again.text
    assert f'<a id="sign-in-instead" href="{SIGN_IN}">' in again.text


def test_staff_sent_to_sign_in_from_an_ops_page_come_back_to_it(django_user_model: Any) -> None:
    ops_users.staff_user(django_user_model, *ops_users.EVERY_OPS_PERMISSION, username="olga")
    client = Client()

    refused = client.get("/ops/deadletters/")
    signed_in = client.post(
        SIGN_IN + "?next=/ops/deadletters/", {"username": "olga", "password": "x", "next": "/ops/deadletters/"}
    )

    assert refused["Location"] == SIGN_IN + "?next=/ops/deadletters/"
    assert signed_in.status_code == 302 and signed_in["Location"] == "/ops/deadletters/"
    assert client.get("/ops/deadletters/").status_code == 200


def test_signing_out_is_a_post_that_ends_the_session(client: Client) -> None:
    sign_up_via_client(client, "pat@example.com")
    client.post(SIGN_IN, {"username": "pat@example.com", "password": PASSWORD})

    response = client.post("/accounts/logout/")

    assert response.status_code == 302 and response["Location"] == "/"
    assert "Sign in" in client.get("/").text and "Sign out" not in client.get("/").text
