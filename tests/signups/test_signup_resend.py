"""A new verification link on request: by email, throttled, one answer whether the address has an account or not."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from devinbox.sink import SmtpSink
from eventbus.models import OutboxEvent
from signups.models import Account
from tests.conftest import wait_for
from tests.factories import sign_up_via_client, unique_email

URL = "/signup/verify/resend/"
REQUESTED = "user.verification_requested"

# Each test its own client address: the per-IP buckets live in this run's Redis for the whole run.
_addresses = itertools.count(10)


def fresh_client(**kwargs: Any) -> Client:
    return Client(REMOTE_ADDR=f"198.51.100.{next(_addresses)}", **kwargs)


def requested_for(user_id: int) -> int:
    return OutboxEvent.objects.filter(type=REQUESTED, aggregate=f"user:{user_id}").count()


def signed_up(email: str, *, verified: bool = False) -> int:
    response = sign_up_via_client(fresh_client(), email=email)
    assert response.status_code == 302
    user = get_user_model().objects.get(username=email)
    if verified:
        Account.objects.filter(user=user).update(email_verified_at="2025-01-01T00:00:00Z")
    return user.pk


def page_without(response: Any, email: str) -> bytes:
    """The page with the address (which the person typed, and sees again) and the CSRF token taken out."""
    content = response.content.replace(email.encode(), b"ADDRESS")
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", content)


@pytest.mark.django_db
def test_the_form_is_csrf_protected() -> None:
    page = fresh_client().get(URL)
    assert page.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in page.content

    refused = fresh_client(enforce_csrf_checks=True).post(URL, {"email": unique_email()})

    assert refused.status_code == 403
    assert not OutboxEvent.objects.filter(type=REQUESTED).exists()


@pytest.mark.django_db
def test_the_answer_is_the_same_whether_the_address_has_an_account_or_not() -> None:
    # given: an unverified account, a verified one, and an address nobody has
    unverified, verified, unknown = unique_email(), unique_email(), unique_email()
    unverified_id = signed_up(unverified)
    verified_id = signed_up(verified, verified=True)

    # when
    answers = {email: fresh_client().post(URL, {"email": email}) for email in (unverified, verified, unknown)}

    # then: one status, one page (but the address typed)
    assert {r.status_code for r in answers.values()} == {200}
    assert len({page_without(r, email) for email, r in answers.items()}) == 1
    # and an email is asked for only for the unverified account, with its id and nothing else
    assert requested_for(unverified_id) == 1
    assert requested_for(verified_id) == 0
    assert OutboxEvent.objects.filter(type=REQUESTED).count() == 1
    assert OutboxEvent.objects.get(type=REQUESTED).payload == {"user_id": unverified_id}


@pytest.mark.django_db
def test_the_address_is_matched_in_any_case_and_spacing() -> None:
    email = unique_email()
    user_id = signed_up(email)

    response = fresh_client().post(URL, {"email": f"  {email.upper()} "})

    assert response.status_code == 200
    assert requested_for(user_id) == 1


@pytest.mark.django_db
def test_one_address_gets_one_link_per_interval_and_the_same_page_after() -> None:
    email = unique_email()
    user_id = signed_up(email)

    first = fresh_client().post(URL, {"email": email})
    # a second request from elsewhere: the mailbox is not flooded, and the answer does not say why
    second = fresh_client().post(URL, {"email": email})

    assert first.status_code == second.status_code == 200
    assert page_without(first, email) == page_without(second, email)
    assert requested_for(user_id) == 1


@pytest.mark.django_db
def test_too_many_requests_from_one_client_get_429_with_retry_after(settings: Any) -> None:
    settings.SIGNUPS_RESEND_RATE_LIMIT = "1/m"
    settings.SIGNUPS_RESEND_RATE_BURST = 2
    client = fresh_client()

    statuses = [client.post(URL, {"email": unique_email()}).status_code for _ in range(3)]
    elsewhere = fresh_client().post(URL, {"email": unique_email()})

    assert statuses == [200, 200, 429]
    refused = client.post(URL, {"email": unique_email()})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert b"Please wait" in refused.content
    assert elsewhere.status_code == 200


@pytest.mark.django_db
def test_a_malformed_address_is_a_field_error() -> None:
    response = fresh_client().post(URL, {"email": "not an address"})

    assert response.status_code == 400
    assert b'id="email-errors"' in response.content
    assert not OutboxEvent.objects.filter(type=REQUESTED).exists()


@pytest.mark.django_db
def test_the_expired_link_page_and_the_status_page_link_to_the_form() -> None:
    client = fresh_client()
    sign_up_via_client(client)

    status_page = client.get("/signup/status/")
    failed_page = client.get("/signup/verify/not-a-token/")

    assert f'href="{URL}"'.encode() in status_page.content
    assert f'href="{URL}"'.encode() in failed_page.content


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_new_link_arrives_by_email_and_verifies_the_address(worker: Any, smtp_sink: SmtpSink) -> None:
    # given: a sign-up whose welcome email arrived
    client = fresh_client()
    email = unique_email()
    assert sign_up_via_client(client, email=email).status_code == 302
    wait_for(lambda: len(smtp_sink.messages) == 1, what="the welcome email")

    # when: the person asks for a new link
    assert fresh_client().post(URL, {"email": email}).status_code == 200

    # then: a second email, with its own Message-ID, whose link verifies the address
    wait_for(lambda: len(smtp_sink.messages) == 2, what="the new link's email")
    event = OutboxEvent.objects.get(type=REQUESTED)
    mail = smtp_sink.messages[1]
    message = mail.message()
    assert mail.rcpt_tos == (email,)
    assert message["Message-ID"] == f"<welcome.{event.id}@testserver>"
    text = message.get_body(preferencelist=("plain",)).get_content()
    link = re.search(r"http://testserver(/signup/verify/[^/\s]+/)", text)
    assert link
    verified = client.get(link.group(1))
    assert verified.status_code == 200
    assert b"is verified" in verified.content
    # and the link, which verifies, never travelled in the event
    assert event.payload == {"user_id": get_user_model().objects.get(username=email).pk}
