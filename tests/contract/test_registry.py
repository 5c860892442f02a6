"""The subscriber registry, walked: every declaration complete, every route declared."""

from __future__ import annotations

import pytest

from eventbus.contract import catalogue, registry
from eventbus.contract.errors import EventDeclarationError
from eventbus.contract.subscriber import subscriber
from project import queues
from project.celery import app as celery_app


def test_every_event_type_has_a_subscriber_and_every_subscriber_a_declared_type() -> None:
    registry.check()
    types = {t.name for t in catalogue.all_types()}
    assert types == {
        "user.signed_up",
        "user.email_verified",
        "user.verification_requested",
        "telemetry.readings_received",
    }
    for event_type in types:
        assert registry.subscriptions_for(event_type), event_type


def test_the_expected_consumers_exist_with_stable_names() -> None:
    assert {s.name for s in registry.subscriptions_for("user.signed_up")} == {
        "notifications.send_welcome_email",
        "analytics.record_event",
    }
    assert {s.name for s in registry.subscriptions_for("user.email_verified")} == {"analytics.record_event"}
    assert {s.name for s in registry.subscriptions_for("user.verification_requested")} == {
        "notifications.send_verification_email"
    }
    assert {s.name for s in registry.subscriptions_for("telemetry.readings_received")} == {"telemetry.rollup"}


@pytest.mark.parametrize("subscription", registry.all_subscriptions(), ids=lambda s: s.name)
def test_each_subscriber_is_a_safe_celery_task_on_its_own_declared_queue(subscription: registry.Subscription) -> None:
    task = celery_app.tasks[subscription.name]
    assert subscription.task.name == task.name == subscription.name
    assert subscription.queue in queues.WORKER_QUEUES
    assert celery_app.amqp.router.route({}, subscription.name)["queue"].name == subscription.queue
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert task.max_retries == subscription.retry.max_retries


def test_queues_are_declared_once_in_settings() -> None:
    declared = [q.name for q in celery_app.conf.task_queues]
    assert declared == list(queues.WORKER_QUEUES)
    assert celery_app.conf.task_create_missing_queues is False


def test_only_json_is_accepted() -> None:
    assert celery_app.conf.accept_content == ["json"]
    assert celery_app.conf.task_serializer == "json"
    assert celery_app.conf.result_accept_content == ["json"]


def test_a_subscriber_on_an_undeclared_queue_fails_at_declaration() -> None:
    with pytest.raises(EventDeclarationError, match="does not declare"):
        subscriber("user.signed_up", name="tests.nowhere", queue="nowhere", label="x")


def test_a_subscriber_without_an_event_type_fails_at_declaration() -> None:
    with pytest.raises(EventDeclarationError, match="names no event type"):
        subscriber(name="tests.nothing", queue=queues.ANALYTICS, label="x")


def test_a_duplicate_subscriber_name_fails_at_declaration() -> None:
    with pytest.raises(EventDeclarationError, match="declared twice"):
        subscriber("user.signed_up", name="analytics.record_event", queue=queues.ANALYTICS, label="x")(
            lambda event: None
        )


def test_check_names_a_subscriber_of_an_undeclared_event_type() -> None:
    subscriber("user.vanished", name="tests.ghost_reader", queue=queues.ANALYTICS, label="x")(lambda event: None)
    try:
        with pytest.raises(EventDeclarationError, match=r"tests\.ghost_reader.*user\.vanished"):
            registry.check()
    finally:
        registry.unregister("tests.ghost_reader")
        celery_app.tasks.pop("tests.ghost_reader", None)
