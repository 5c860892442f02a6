"""Versioned payloads: upcasters declared, chained, checked at start, and old messages delivered as current.

The first half uses throwaway types in a scratch catalogue (tests/contract/scratch.py).
The second half is ``user.signed_up`` (version 2 added ``channel``) with real parts:
the real Redis, a real worker in threads of this process, the outbox relay and the
dead-letter replay. A version-1 message, waiting where messages wait, reaches the
handler as version 2; a version no upcaster reaches becomes a poison dead letter.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from analytics.models import AnalyticsEvent
from eventbus.contract import catalogue, registry
from eventbus.contract.catalogue import event_type, upcaster
from eventbus.contract.envelope import Envelope
from eventbus.contract.errors import EventDeclarationError, PoisonMessage
from eventbus.contract.subscriber import subscriber
from eventbus.deadletters import Kind, operations
from eventbus.models import DeadLetter, OutboxEvent
from eventbus.outbox.relay import relay
from lab.demos.versions import signed_up_v1
from project import queues
from project.celery import app as celery_app
from signups.events import UserSignedUp
from tests.conftest import running_worker, wait_for
from tests.contract.scratch import scratch
from tests.deadletters.test_deadletters import dead_letter

PROBE = "tests.versions_probe"


def probe_wire(version: int, payload: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": PROBE,
        "version": version,
        "occurred_at": "2026-12-07T09:00:00Z",
        "aggregate": "probe:1",
        "sequence": 1,
        "correlation_id": "versions",
        "causation_id": None,
        "payload": payload,
    }


@pytest.fixture
def probe_v3() -> Iterator[type]:
    """A throwaway type at version 3 with a complete chain: 1 gained ``unit``, 2 renamed ``size`` to ``length``."""
    with scratch():

        @event_type(PROBE, version=3)
        @dataclass(frozen=True)
        class Probe:
            length: int
            unit: str

        @upcaster(PROBE, from_version=1)
        def _metres(payload: dict[str, Any]) -> dict[str, Any]:
            return {**payload, "unit": "m"}

        @upcaster(PROBE, from_version=2)
        def _length(payload: dict[str, Any]) -> dict[str, Any]:
            payload["length"] = payload.pop("size")  # edits its argument: the bus hands it a copy
            return payload

        catalogue.check()
        yield Probe


# --- the chain -------------------------------------------------------------------


def test_each_older_version_runs_the_chain_to_the_current_one(probe_v3: type) -> None:
    for version, payload in [(1, {"size": 4}), (2, {"size": 4, "unit": "m"}), (3, {"length": 4, "unit": "m"})]:
        wire = probe_wire(version, payload)
        kept = dict(payload)

        event = Envelope.from_dict(wire)

        assert (event.version, event.payload) == (3, probe_v3(length=4, unit="m"))
        assert wire["payload"] == kept, "the stored body must not change"


@pytest.mark.parametrize("version", [0, 4, 99])
def test_a_version_no_chain_reaches_is_poison_naming_what_this_code_reads(probe_v3: type, version: int) -> None:
    with pytest.raises(PoisonMessage) as caught:
        Envelope.from_dict(probe_wire(version, {"size": 4}))
    assert str(caught.value) == f"unsupported schema version {version} of {PROBE} (this code reads versions 1 to 3)"


def test_an_old_payload_the_upcaster_cannot_read_is_poison_naming_the_upcaster(probe_v3: type) -> None:
    with pytest.raises(PoisonMessage, match=r"upcaster .*_length \(tests.versions_probe v2 to v3\) failed: KeyError"):
        Envelope.from_dict(probe_wire(1, {"length": 4}))


def test_an_upcaster_that_returns_no_object_is_poison() -> None:
    with scratch():

        @event_type(PROBE, version=2)
        @dataclass(frozen=True)
        class Probe:
            size: int

        @upcaster(PROBE, from_version=1)
        def _broken(payload: dict[str, Any]) -> dict[str, Any]:
            return None  # type: ignore[return-value]

        reason = r"upcaster .*_broken \(tests.versions_probe v1 to v2\) returned NoneType, not an object"
        with pytest.raises(PoisonMessage, match=reason):
            Envelope.from_dict(probe_wire(1, {"size": 4}))


def test_the_upcast_payload_is_still_validated_as_the_current_version(probe_v3: type) -> None:
    with pytest.raises(PoisonMessage, match="length is str, expected int"):
        Envelope.from_dict(probe_wire(1, {"size": "four"}))


# --- declaration errors ------------------------------------------------------------


def _step(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


def test_two_upcasters_from_one_version_are_refused(probe_v3: type) -> None:
    with pytest.raises(EventDeclarationError, match=r"two upcasters of 'tests\.versions_probe' from version 1"):
        upcaster(PROBE, from_version=1)(_step)


def test_an_upcaster_from_the_current_version_or_beyond_is_refused(probe_v3: type) -> None:
    with pytest.raises(EventDeclarationError, match="current version is 3, so there is no version 4"):
        upcaster(PROBE, from_version=3)(_step)
    with pytest.raises(EventDeclarationError, match="below 1"):
        upcaster(PROBE, from_version=0)(_step)


def test_a_type_declared_below_an_upcaster_already_declared_is_refused() -> None:
    with scratch():
        upcaster(PROBE, from_version=2)(_step)
        with pytest.raises(EventDeclarationError, match="at version 2, but an upcaster starts from version 2"):

            @event_type(PROBE, version=2)
            @dataclass(frozen=True)
            class Probe:
                size: int


def test_the_start_check_refuses_a_gap_in_the_chain() -> None:
    with scratch():

        @event_type(PROBE, version=3)
        @dataclass(frozen=True)
        class Probe:
            size: int

        upcaster(PROBE, from_version=2)(_step)
        with pytest.raises(EventDeclarationError, match="no upcaster starts from version 1"):
            catalogue.check()


def test_the_start_check_refuses_an_upcaster_of_an_undeclared_type() -> None:
    with scratch():
        upcaster("tests.nobody", from_version=1)(_step)
        with pytest.raises(EventDeclarationError, match=r"upcaster of undeclared event type 'tests\.nobody'"):
            catalogue.check()


# --- user.signed_up v1, delivered as v2 by a real worker ---------------------------

SEEN = "tests.versions_seen"


@pytest.fixture
def seen(broker: None) -> Iterator[dict[str, Envelope]]:
    """What a subscriber of ``user.signed_up`` declared here was handed, by event id, with a real worker running."""
    handed: dict[str, Envelope] = {}

    @subscriber("user.signed_up", name=SEEN, queue=queues.ANALYTICS, label="versions seen")
    def remember(event: Envelope) -> None:
        handed[str(event.id)] = event

    try:
        with running_worker(queues.ANALYTICS, queues.DEAD_LETTER):
            yield handed
    finally:
        registry.unregister(SEEN)
        celery_app.tasks.pop(SEEN, None)


def assert_delivered_as_v2(seen: dict[str, Envelope], wire: dict[str, Any]) -> None:
    event = wait_for(lambda: seen.get(wire["id"]), what="the handler called")
    assert event.version == 2
    assert event.payload == UserSignedUp(user_id=wire["payload"]["user_id"], channel="web")


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_a_version_1_message_on_the_queue_is_handled_as_version_2(seen: dict[str, Envelope]) -> None:
    # given: a version-1 message queued before the deploy, for the per-message and the batched consumer
    wire = signed_up_v1(501)
    for name in (SEEN, "analytics.record_event"):
        registry.get(name).task.apply_async(args=(wire,), queue=queues.ANALYTICS)

    # then: both take it, as version 2
    assert_delivered_as_v2(seen, wire)
    row = wait_for(lambda: AnalyticsEvent.objects.filter(event_id=wire["id"]).first(), what="the analytics row")
    assert row.properties["channel"] == "web"
    assert not DeadLetter.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_a_version_1_outbox_row_relayed_is_handled_as_version_2(seen: dict[str, Envelope]) -> None:
    # given: an outbox row written by version-1 code, not sent yet
    wire = signed_up_v1(502)
    OutboxEvent.objects.create(**{**wire, "occurred_at": datetime.now(UTC)})

    # when
    assert relay(grace=0).dispatched == 1

    # then: the row's payload went out as stored, and the handler reads it as version 2
    assert_delivered_as_v2(seen, wire)
    assert OutboxEvent.objects.get(pk=wire["id"]).payload == {"user_id": 502}


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_a_version_1_dead_letter_replayed_is_handled_as_version_2(seen: dict[str, Envelope]) -> None:
    # given: a version-1 event that exhausted its retries before the deploy
    wire = signed_up_v1(503)
    row = dead_letter(body=wire, subscriber=SEEN, task_name=SEEN)

    # when
    (item,) = operations.replay([row], by="alice").items

    # then
    assert item.sent, item.describe(dry_run=False)
    assert_delivered_as_v2(seen, wire)
    row.refresh_from_db()
    assert row.body == wire


@pytest.mark.django_db(transaction=True)
@pytest.mark.integration
def test_a_version_no_upcaster_reaches_becomes_a_poison_dead_letter_with_its_reason(seen: dict[str, Envelope]) -> None:
    wire = signed_up_v1(504, version=3)
    registry.get(SEEN).task.apply_async(args=(wire,), queue=queues.ANALYTICS)

    row = wait_for(lambda: DeadLetter.objects.filter(event_id=wire["id"]).first(), what="the poison dead letter")
    assert (row.kind, row.subscriber, row.body) == (Kind.POISON, SEEN, wire)
    assert "unsupported schema version 3 of user.signed_up (this code reads versions 1 to 2)" in row.exception_message
    assert wire["id"] not in seen
