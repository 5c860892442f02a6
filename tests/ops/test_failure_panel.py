"""The failure panel on /ops/ (ops/views/failures.py) and the failures the dev SMTP sink plays (devinbox/faults.py).

The views are refused with DJANGO_DEBUG off, whoever asks; with it on they
need a staff account with the outbox's change permission and a CSRF token.
The sink's side is tested against a real sink over SMTP.
"""

from __future__ import annotations

import importlib
import smtplib
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import clear_url_caches, set_urlconf

from devinbox import faults
from devinbox.sink import SmtpSink
from ops.views.access import VIEW_EVENTS
from ops.views.failures import CAUSE_FAILURES
from tests import ops_users

pytestmark = pytest.mark.django_db

PANEL = "/ops/"
ACTIONS = ["/ops/failures/provider/", "/ops/failures/queue/", "/ops/failures/flood/", "/ops/failures/heal/"]


@pytest.fixture
def clean_faults(redis_prefix: str) -> Iterator[None]:
    """A key prefix of this test's own, so that no outage set here reaches another test."""
    yield
    faults.bring_provider_back()


@pytest.fixture
def operator(django_user_model: Any) -> Client:
    return ops_users.staff_client(django_user_model, VIEW_EVENTS, CAUSE_FAILURES)


def reload_urls() -> None:
    # project/urls.py adds the dev inbox (which every page links to with DEBUG on) only if DEBUG is on.
    importlib.reload(importlib.import_module(django_settings.ROOT_URLCONF))
    clear_url_caches()
    set_urlconf(None)


@pytest.fixture
def debug_on(settings: Any) -> Iterator[None]:
    """DJANGO_DEBUG on, with the URLs that come with it; both restored after."""
    settings.DEBUG = True
    reload_urls()
    yield
    settings.DEBUG = False
    reload_urls()


# --- DJANGO_DEBUG off: refused, and not shown ---------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_answers_404_with_debug_off(action: str, operator: Client, clean_faults: None) -> None:
    response = operator.post(action, {"seconds": "30", "queue": "analytics", "count": "5"})
    assert response.status_code == 404
    assert faults.provider_down_for() == 0


def test_the_panel_is_not_shown_with_debug_off(admin_client: Client, clean_faults: None) -> None:
    response = admin_client.get(PANEL)
    assert response.status_code == 200
    assert 'id="failures"' not in response.content.decode()


def test_the_sign_up_page_has_no_special_addresses_with_debug_off(client: Client) -> None:
    assert "special-addresses-help" not in client.get("/signup/").content.decode()


def test_the_sign_up_page_lists_the_special_addresses_with_debug_on(client: Client, debug_on: None) -> None:
    page = client.get("/signup/").content.decode()
    assert "special-addresses-help" in page and "<code>refuse@…</code>" in page


# --- DJANGO_DEBUG on ------------------------------------------------------------------------


def test_the_panel_shows_the_special_addresses_and_the_outage(
    operator: Client, debug_on: None, clean_faults: None
) -> None:
    page = operator.get(PANEL).content.decode()
    assert 'id="failures"' in page and "the email provider takes mail" in page
    for local_part in faults.SPECIAL_LOCAL_PARTS:
        assert f"<code>{local_part}@…</code>" in page

    response = operator.post("/ops/failures/provider/", {"seconds": "120"})

    assert response.status_code == 302 and response["Location"] == "/ops/#failures"
    assert 0 < faults.provider_down_for() <= 120
    page = operator.get(PANEL).content.decode()
    assert "refuses every email (451) for 120 s" in page
    assert 'id="provider-down"' in page


def test_heal_brings_the_provider_back(operator: Client, debug_on: None, clean_faults: None) -> None:
    faults.take_provider_down(300)
    operator.post("/ops/failures/heal/")
    assert faults.provider_down_for() == 0


def test_an_outage_is_bounded(operator: Client, debug_on: None, clean_faults: None) -> None:
    operator.post("/ops/failures/provider/", {"seconds": "99999"})
    assert 0 < faults.provider_down_for() <= faults.MAX_SECONDS


def test_a_bad_number_or_queue_is_said_and_changes_nothing(
    operator: Client, debug_on: None, clean_faults: None
) -> None:
    page = operator.post("/ops/failures/provider/", {"seconds": "soon"}, follow=True).content.decode()
    assert "seconds must be a whole number" in page
    page = operator.post("/ops/failures/queue/", {"queue": "eventbus"}, follow=True).content.decode()
    assert "choose one of notifications, analytics, telemetry" in page
    assert faults.provider_down_for() == 0


def test_pausing_a_queue_nobody_consumes_is_said(
    operator: Client, debug_on: None, clean_faults: None, broker: None
) -> None:
    page = operator.post("/ops/failures/queue/", {"queue": "analytics", "seconds": "30"}, follow=True)
    assert "no worker consumes analytics now: nothing to pause" in page.content.decode()
    assert "data-paused" not in page.content.decode()


def test_staff_without_the_permission_get_403_and_anonymous_visitors_log_in(
    django_user_model: Any, client: Client, debug_on: None, clean_faults: None
) -> None:
    viewer = ops_users.staff_client(django_user_model, VIEW_EVENTS)
    assert viewer.post("/ops/failures/provider/", {"seconds": "30"}).status_code == 403
    assert 'id="failures"' not in viewer.get(PANEL).content.decode()
    response = client.post("/ops/failures/provider/", {"seconds": "30"})
    assert response.status_code == 302 and "/login" in response["Location"]
    assert faults.provider_down_for() == 0


def test_a_post_without_its_csrf_token_is_refused(django_user_model: Any, debug_on: None, clean_faults: None) -> None:
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(ops_users.staff_user(django_user_model, VIEW_EVENTS, CAUSE_FAILURES))
    assert strict.post("/ops/failures/provider/", {"seconds": "30"}).status_code == 403
    assert faults.provider_down_for() == 0


def test_a_get_is_not_an_action(operator: Client, debug_on: None) -> None:
    assert operator.get("/ops/failures/provider/").status_code == 405


# --- The sink's side ------------------------------------------------------------------------


def send(sink: SmtpSink, to: str) -> None:
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as smtp:
        smtp.sendmail("from@example.com", [to], b"Subject: hi\r\n\r\nhello\r\n")


@pytest.mark.parametrize(
    ("address", "kind"),
    [("refuse@example.com", "refuse"), ("Later+7@x.org", "later"), ("slow+a@x", "slow"), ("refused@x", None)],
)
def test_special_addresses_by_their_local_part(address: str, kind: str | None) -> None:
    assert faults.special_kind(address) == kind


def test_a_refuse_address_is_refused_for_good_once_then_taken() -> None:
    with SmtpSink(port=0, faults=faults.SinkFaults(outage=lambda: 0.0)) as sink:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send(sink, "refuse+1@example.com")
        assert refused.value.recipients["refuse+1@example.com"][0] == 550
        send(sink, "refuse+1@example.com")  # the replay
        assert len(sink.messages) == 1


def test_a_later_address_is_refused_for_now_then_taken() -> None:
    with SmtpSink(port=0, faults=faults.SinkFaults(outage=lambda: 0.0)) as sink:
        for _ in range(faults.LATER_REFUSALS):
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                send(sink, "later+1@example.com")
            assert refused.value.recipients["later+1@example.com"][0] == 451
        send(sink, "later+1@example.com")
        send(sink, "someone@example.com")
        assert len(sink.messages) == 2


def test_while_the_provider_is_down_every_mail_is_refused_for_now(clean_faults: None) -> None:
    with SmtpSink(port=0, faults=faults.SinkFaults()) as sink:
        faults.take_provider_down(60)
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            send(sink, "someone@example.com")
        assert refused.value.smtp_code == 451
        faults.bring_provider_back()
        send(sink, "someone@example.com")
        assert len(sink.messages) == 1


def test_a_slow_address_waits_before_data_is_answered() -> None:
    assert faults.SinkFaults().data_delay(["a@x", "slow+2@example.com"]) == faults.SLOW_SECONDS
    assert faults.SinkFaults().data_delay(["a@x"]) == 0
