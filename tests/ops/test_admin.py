"""Django admin: every model registered and browsable by staff; the actions do what they say, on a real broker."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.messages import get_messages
from django.db import models
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

from eventbus.models import AggregateSequence, DeadLetter, DeliveryStep, OutboxEvent, ProcessedEvent
from project import queues
from signups.models import Account
from signups.services import sign_up
from tests.brokers import dead_broker_url, using_broker
from tests.conftest import drain_messages
from tests.deadletters.test_deadletters import dead_letter
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

PROJECT_APPS = ("eventbus", "signups", "analytics", "notifications", "devinbox", "ops")
EMAIL = "notifications.send_welcome_email"
ANALYTICS = "analytics.record_event"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def taken(queue: str) -> list[dict[str, Any]]:
    """Take every message waiting on ``queue`` off the real broker; each one's envelope."""
    return [message.decode()[0][0] for message in drain_messages(queue)]


def pending_event(email: str = "ada@example.com") -> OutboxEvent:
    """A sign-up whose transaction never commits here (a test transaction): its event stays pending."""
    user = sign_up(email, PASSWORD)
    return OutboxEvent.objects.get(aggregate=f"user:{user.pk}")


def changelist(model: type[models.Model]) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def run_action(client: Client, model: type[models.Model], action: str, pks: list[Any]) -> Any:
    return client.post(changelist(model), {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True)


@pytest.fixture
def records() -> OutboxEvent:
    """One row of every project model, so that list columns and change pages render real values."""
    event = pending_event()
    ProcessedEvent.objects.create(
        event_id=event.id,
        subscriber=ANALYTICS,
        event_type=event.type,
        aggregate=event.aggregate,
        sequence=event.sequence,
        task_id="t-1",
        worker="w1@host",
        runtime_ms=2.5,
    )
    DeliveryStep.objects.create(event_id=event.id, subscriber=EMAIL, step="retried", detail="x; retry 1/5 in 1.0s")
    dead_letter(body=event.to_wire())
    from analytics.models import AnalyticsEvent

    AnalyticsEvent.objects.create(event_id=event.id, type=event.type, user_id=1, occurred_at=timezone.now())
    TaskResult.objects.create(task_id="t-1", task_name=ANALYTICS, status="SUCCESS", task_args="()")
    return event


# --- registration and pages ---------------------------------------------------------------


def test_every_model_of_the_project_is_registered() -> None:
    project_models = [m for m in apps.get_models() if m._meta.app_label in PROJECT_APPS]
    assert project_models, "no project model found"
    missing = [m._meta.label for m in project_models if not admin.site.is_registered(m)]
    assert missing == []


def test_the_admin_index_names_broker_losses_in_plain_english(admin_client: Client) -> None:
    page = admin_client.get(reverse("admin:index")).text
    assert "Broker losses" in page
    assert "losss" not in page


def test_every_changelist_and_change_page_loads_for_staff(admin_client: Client, records: OutboxEvent) -> None:
    for model, model_admin in admin.site._registry.items():
        response = admin_client.get(changelist(model))
        assert response.status_code == 200, model._meta.label
        obj = model_admin.get_queryset(response.wsgi_request).first()
        if obj is not None:
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[obj.pk])
            assert admin_client.get(url).status_code == 200, model._meta.label
        searched = admin_client.get(changelist(model), {"q": "x"})
        assert searched.status_code == 200, f"{model._meta.label} search"


def test_records_written_by_the_bus_are_read_only(admin_client: Client, records: OutboxEvent) -> None:
    for model in (ProcessedEvent, DeliveryStep, AggregateSequence):
        page = admin_client.get(changelist(model))
        assert reverse(f"admin:eventbus_{model._meta.model_name}_add") not in page.text, model._meta.label
        assert "delete_selected" not in page.text, model._meta.label
    assert admin_client.get(reverse("admin:eventbus_outboxevent_add")).status_code == 403
    sequence = AggregateSequence.objects.get()
    assert admin_client.post(reverse("admin:eventbus_aggregatesequence_delete", args=[sequence.pk])).status_code == 403


def test_an_outbox_event_links_to_its_timeline_and_is_found_by_its_id(
    admin_client: Client, records: OutboxEvent
) -> None:
    other = pending_event("other@example.com")
    page = admin_client.get(reverse("admin:eventbus_outboxevent_change", args=[records.pk]))
    found = admin_client.get(changelist(OutboxEvent), {"q": str(records.pk)})
    ledger = admin_client.get(changelist(ProcessedEvent), {"q": str(records.pk)})

    assert f'href="/ops/events/{records.pk}/"' in page.text
    assert list(found.context["cl"].result_list) == [records]
    assert str(other.pk) not in found.text
    assert f'href="/ops/events/{records.pk}/"' in ledger.text


def test_staff_without_permissions_see_no_changelist(client: Client, django_user_model: Any) -> None:
    client.force_login(django_user_model.objects.create_user("pat", password="x", is_staff=True))
    assert client.get(changelist(OutboxEvent)).status_code == 403


# --- the outbox actions, against the real broker -----------------------------------------------


@pytest.mark.integration
@pytest.mark.usefixtures("broker")
def test_send_now_dispatches_the_selected_pending_events(admin_client: Client) -> None:
    # given: two pending events; one is selected
    chosen, other = pending_event("one@example.com"), pending_event("two@example.com")

    # when
    response = run_action(admin_client, OutboxEvent, "send_selected_now", [chosen.pk])

    # then: one message per subscriber on its own queue, for the chosen event only
    assert [e["id"] for e in taken(queues.NOTIFICATIONS)] == [str(chosen.pk)]
    assert [e["id"] for e in taken(queues.ANALYTICS)] == [str(chosen.pk)]
    chosen.refresh_from_db()
    other.refresh_from_db()
    assert (chosen.status, chosen.lease_owner) == (OutboxEvent.Status.DISPATCHED, "")
    assert chosen.dispatched_at is not None
    assert other.status == OutboxEvent.Status.PENDING
    assert "sent 1, deferred again 0" in " ".join(messages_of(response))


@pytest.mark.integration
@pytest.mark.usefixtures("broker")
def test_send_now_sends_a_deferred_event_to_the_subscribers_still_waiting(admin_client: Client) -> None:
    event = pending_event()
    OutboxEvent.objects.filter(pk=event.pk).update(status=OutboxEvent.Status.DEFERRED, deferred_subscribers=[EMAIL])

    run_action(admin_client, OutboxEvent, "send_selected_now", [event.pk])

    assert [e["id"] for e in taken(queues.NOTIFICATIONS)] == [str(event.pk)]
    assert taken(queues.ANALYTICS) == []
    event.refresh_from_db()
    assert (event.status, event.deferred_subscribers) == (OutboxEvent.Status.DISPATCHED, [])


@pytest.mark.integration
@pytest.mark.usefixtures("broker")
def test_send_now_skips_dispatched_and_leased_events(admin_client: Client) -> None:
    done, leased = pending_event("one@example.com"), pending_event("two@example.com")
    OutboxEvent.objects.filter(pk=done.pk).update(status=OutboxEvent.Status.DISPATCHED)
    OutboxEvent.objects.filter(pk=leased.pk).update(
        lease_owner="a-relay", lease_until=timezone.now() + timedelta(minutes=1)
    )

    response = run_action(admin_client, OutboxEvent, "send_selected_now", [done.pk, leased.pk])

    assert taken(queues.NOTIFICATIONS) == [] and taken(queues.ANALYTICS) == []
    assert "sent 0, deferred again 0 (queue still full), skipped 2" in " ".join(messages_of(response))
    leased.refresh_from_db()
    assert (leased.status, leased.lease_owner) == (OutboxEvent.Status.PENDING, "a-relay")


@pytest.mark.integration
@pytest.mark.usefixtures("broker")
def test_send_now_on_a_dead_broker_leaves_the_event_pending_with_the_error(admin_client: Client) -> None:
    event = pending_event()

    with using_broker(dead_broker_url()):
        response = run_action(admin_client, OutboxEvent, "send_selected_now", [event.pk])

    event.refresh_from_db()
    assert event.status == OutboxEvent.Status.PENDING
    assert event.last_error and event.lease_owner == ""
    assert "1 not sent, the broker failed" in " ".join(messages_of(response))


@pytest.mark.integration
@pytest.mark.usefixtures("broker")
def test_send_again_goes_only_to_subscribers_whose_ledger_lacks_the_event(admin_client: Client) -> None:
    # given: a dispatched event that analytics processed and whose email message was lost
    event = pending_event()
    OutboxEvent.objects.filter(pk=event.pk).update(status=OutboxEvent.Status.DISPATCHED, dispatched_at=timezone.now())
    ProcessedEvent.objects.create(
        event_id=event.id, subscriber=ANALYTICS, event_type=event.type, aggregate=event.aggregate, sequence=1
    )

    response = run_action(admin_client, OutboxEvent, "resend_to_unprocessed", [event.pk])

    assert [e["id"] for e in taken(queues.NOTIFICATIONS)] == [str(event.pk)]
    assert taken(queues.ANALYTICS) == []
    assert "sent 1 message for 1 event" in " ".join(messages_of(response))


# --- other actions ------------------------------------------------------------------------


def test_verifying_accounts_goes_through_the_service_and_publishes_once(admin_client: Client) -> None:
    pending_event("ver@example.com")
    account = Account.objects.get()

    first = run_action(admin_client, Account, "verify_selected", [account.pk])
    second = run_action(admin_client, Account, "verify_selected", [account.pk])

    account.refresh_from_db()
    assert account.is_verified
    assert OutboxEvent.objects.filter(type="user.email_verified").count() == 1
    assert "Verified 1 account; 0 already were." in messages_of(first)
    assert "Verified 0 accounts; 1 already were." in messages_of(second)


def test_the_account_list_filters_by_verification(admin_client: Client) -> None:
    pending_event("yes@example.com")
    pending_event("no@example.com")
    Account.objects.filter(user__email="yes@example.com").update(email_verified_at=timezone.now())

    verified = admin_client.get(changelist(Account), {"verified": "yes"})
    unverified = admin_client.get(changelist(Account), {"verified": "no"})

    assert "yes@example.com" in verified.text and "no@example.com" not in verified.text
    assert "no@example.com" in unverified.text and "yes@example.com" not in unverified.text


def test_the_dead_letter_admin_keeps_its_actions_and_links_the_timeline(admin_client: Client) -> None:
    event = pending_event()
    row = dead_letter(body=event.to_wire(), task_id=str(uuid.uuid4()))

    dry = run_action(admin_client, DeadLetter, "dry_run_replay_selected", [row.pk])
    page = admin_client.get(reverse("admin:eventbus_deadletter_change", args=[row.pk]))

    assert any(m.startswith("dry run: 1 of 1 dead letters would be replayed") for m in messages_of(dry))
    assert f'href="/ops/events/{event.pk}/"' in page.text
