"""The sign-up form and flow, inside the request: validation, hashing, events written to the outbox."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from eventbus.models import OutboxEvent
from signups.services import email_taken, users_with_address
from signups.verification import make_token
from tests.factories import PASSWORD, sign_up_via_client

pytestmark = pytest.mark.django_db


def post(client: Client, **fields: str) -> object:
    data = {"email": "ann@example.com", "password": PASSWORD, "password_confirm": PASSWORD, **fields}
    return client.post("/signup/", data)


def test_root_links_to_the_signup_page(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert b'href="/signup/"' in response.content


def test_signup_page_renders_a_csrf_protected_form(client: Client) -> None:
    response = client.get("/signup/")
    assert response.status_code == 200
    assert b"csrfmiddlewaretoken" in response.content


def test_a_post_without_csrf_token_is_refused() -> None:
    client = Client(enforce_csrf_checks=True)
    response = post(client)
    assert response.status_code == 403
    assert not get_user_model().objects.exists()


def test_a_good_signup_creates_a_user_with_a_hashed_password_and_one_outbox_event(client: Client) -> None:
    response = post(client, email="  Ann@Example.COM ")

    assert response.status_code == 302
    assert response["Location"] == "/signup/status/"
    user = get_user_model().objects.get()
    assert user.email == "ann@example.com"
    assert user.password != PASSWORD and user.check_password(PASSWORD)
    event = OutboxEvent.objects.get()
    assert event.type == "user.signed_up"
    assert event.aggregate == f"user:{user.pk}"
    assert event.sequence == 1
    assert event.payload == {"user_id": user.pk, "channel": "web"}
    assert event.correlation_id == response["X-Request-ID"]


def test_the_request_id_header_is_honoured_and_carried_into_the_event(client: Client) -> None:
    response = client.post(
        "/signup/",
        {"email": "rid@example.com", "password": PASSWORD, "password_confirm": PASSWORD},
        headers={"X-Request-ID": "trace-abc.123"},
    )
    assert response["X-Request-ID"] == "trace-abc.123"
    assert OutboxEvent.objects.get().correlation_id == "trace-abc.123"


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"email": "not-an-email"}, "email", "Enter a valid email address."),
        ({"email": ""}, "email", "This field is required."),
        ({"email": "a" * 250 + "@example.com"}, "email", "at most 254 characters"),
        ({"password": "short", "password_confirm": "short"}, "password", "too short"),
        ({"password": "password123", "password_confirm": "password123"}, "password", "too common"),
        ({"password": "12345678901234", "password_confirm": "12345678901234"}, "password", "entirely numeric"),
        ({"password_confirm": "something else entirely"}, "password_confirm", "The two passwords differ."),
        ({"password": "x" * 129, "password_confirm": "x" * 129}, "password", "at most 128 characters"),
    ],
)
def test_a_bad_submission_rerenders_with_field_errors_and_publishes_nothing(
    client: Client, fields: dict[str, str], field: str, message: str
) -> None:
    response = post(client, **fields)

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors
    assert any(message in e for e in errors[field]), errors[field]
    assert f'id="{field}-errors"'.encode() in response.content
    assert not get_user_model().objects.exists()
    assert not OutboxEvent.objects.exists()


def test_a_duplicate_email_in_any_case_gets_a_clear_message_not_a_500(client: Client) -> None:
    post(client, email="dup@example.com")
    second = Client()

    response = post(second, email="DUP@example.com")

    assert response.status_code == 400
    assert "already exists" in response.context["form"].errors["email"][0]
    assert get_user_model().objects.count() == 1
    assert OutboxEvent.objects.count() == 1


def test_an_address_is_taken_by_any_users_username_or_email_in_any_case() -> None:
    # given an account made outside the sign-up form (the admin, createsuperuser), in mixed case
    get_user_model().objects.create_user(username="Ops-Admin", email="Ops@Example.COM")

    assert email_taken("ops@example.com")
    assert email_taken(" OPS-ADMIN ")
    assert not email_taken("ops@example.org")


def test_the_address_check_finds_users_through_the_case_folded_indexes() -> None:
    # the two indexes of migration 0002, not a scan of the user table
    get_user_model().objects.create_user(username="someone@example.com", email="someone@example.com")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # a table of one row is cheaper to scan: make the planner show what it could use
            cursor.execute("SET LOCAL enable_seqscan = off")
        plan = users_with_address("Someone@Example.com").explain()

    assert "signups_user_username_lower" in plan and "signups_user_email_lower" in plan, plan
    assert [u.email for u in users_with_address("SOMEONE@example.com")] == ["someone@example.com"]


def test_a_lost_race_on_the_same_email_is_a_field_error(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # given: the form's check passed, but another sign-up committed the address meanwhile
    post(client, email="race@example.com")
    monkeypatch.setattr("signups.forms.email_taken", lambda email: False)

    response = post(Client(), email="race@example.com")

    assert response.status_code == 400
    assert "already exists" in response.context["form"].errors["email"][0]
    assert OutboxEvent.objects.count() == 1


def test_status_page_without_a_signup_redirects_to_the_form(client: Client) -> None:
    assert client.get("/signup/status/")["Location"] == "/signup/"
    assert client.get("/signup/status.json").status_code == 404


def test_status_page_shows_each_subscriber_waiting(client: Client) -> None:
    sign_up_via_client(client)

    page = client.get("/signup/status/")
    data = client.get("/signup/status.json").json()

    assert b"welcome email" in page.content and b"analytics" in page.content
    (event,) = data["events"]
    assert event["type"] == "user.signed_up"
    # Nothing consumed it in this test: it sits in the outbox.
    assert {d["label"]: d["text"] for d in event["deliveries"]} == {
        "welcome email": "waiting to be queued",
        "analytics": "waiting to be queued",
    }


def test_verifying_twice_publishes_one_event(client: Client) -> None:
    sign_up_via_client(client, email="v@example.com")
    user = get_user_model().objects.get()
    url = f"/signup/verify/{make_token(user.pk, user.email)}/"

    first = client.get(url)
    second = client.get(url)

    assert first.status_code == 200 and b"is verified" in first.content
    assert second.status_code == 200 and b"already verified" in second.content
    verified = OutboxEvent.objects.filter(type="user.email_verified")
    assert verified.count() == 1
    assert verified.get().sequence == 2
    user.account.refresh_from_db()
    assert user.account.is_verified


def test_a_tampered_token_gets_a_clear_page(client: Client) -> None:
    sign_up_via_client(client, email="t@example.com")
    user = get_user_model().objects.get()
    token = make_token(user.pk, user.email)

    response = client.get(f"/signup/verify/{token[:-3]}xyz/")

    assert response.status_code == 400
    assert b"not valid" in response.content
    assert not OutboxEvent.objects.filter(type="user.email_verified").exists()


def test_an_expired_token_gets_a_clear_page(client: Client, settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    sign_up_via_client(client, email="old@example.com")
    user = get_user_model().objects.get()
    settings.SIGNUPS_VERIFICATION_MAX_AGE = 60
    # given: a token made two minutes ago
    import time

    real_time = time.time
    monkeypatch.setattr("django.core.signing.time.time", lambda: real_time() - 120)
    token = make_token(user.pk, user.email)
    monkeypatch.setattr("django.core.signing.time.time", real_time)

    response = client.get(f"/signup/verify/{token}/")

    assert response.status_code == 400
    assert b"expired" in response.content
    assert not OutboxEvent.objects.filter(type="user.email_verified").exists()


def test_a_token_for_an_address_the_account_no_longer_has_is_refused(client: Client) -> None:
    sign_up_via_client(client, email="moved@example.com")
    user = get_user_model().objects.get()
    token = make_token(user.pk, "previous@example.com")

    response = client.get(f"/signup/verify/{token}/")

    assert response.status_code == 400
    assert not OutboxEvent.objects.filter(type="user.email_verified").exists()


def test_too_many_signups_from_one_address_get_429_with_retry_after(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SIGNUP_RATE_LIMIT = "1/m"
    settings.SIGNUP_RATE_BURST = 2
    client = Client(REMOTE_ADDR="203.0.113.7")

    statuses = [post(client, email=f"burst{n}@example.com").status_code for n in range(3)]
    other_address = post(Client(REMOTE_ADDR="203.0.113.8"), email="elsewhere@example.com")

    assert statuses == [302, 302, 429]
    refused = post(client, email="again@example.com")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert b"Please wait" in refused.content
    assert other_address.status_code == 302
    assert get_user_model().objects.count() == 3
