"""The envelope: JSON round trip and every way a message can be poison."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from eventbus.contract.envelope import Envelope
from eventbus.contract.errors import PoisonMessage
from signups.events import UserSignedUp


def make_envelope(**overrides: object) -> Envelope:
    fields: dict[str, object] = {
        "id": uuid.uuid4(),
        "type": "user.signed_up",
        "version": 2,
        "occurred_at": datetime(2026, 11, 26, 9, 30, tzinfo=UTC),
        "aggregate": "user:42",
        "sequence": 1,
        "correlation_id": "req-1",
        "causation_id": None,
        "payload": UserSignedUp(user_id=42, channel="web"),
    }
    fields.update(overrides)
    return Envelope(**fields)  # type: ignore[arg-type]


def wire(**overrides: object) -> dict[str, object]:
    data = make_envelope().to_dict()
    data.update(overrides)
    return data


def test_round_trip_through_json_keeps_every_field() -> None:
    envelope = make_envelope()

    decoded = Envelope.from_dict(json.loads(json.dumps(envelope.to_dict())))

    assert decoded == envelope
    assert isinstance(decoded.payload, UserSignedUp)


def test_wire_form_is_utc_iso8601() -> None:
    assert make_envelope().to_dict()["occurred_at"] == "2026-11-26T09:30:00Z"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not a dict", "not an object"),
        ({k: v for k, v in wire().items() if k != "sequence"}, "lacks fields: sequence"),
        (wire(type="user.exploded"), "unknown event type 'user.exploded'"),
        (wire(version=99), "unsupported schema version 99"),
        (wire(id="not-a-uuid"), "not a UUID"),
        (wire(occurred_at="yesterday"), "not ISO 8601"),
        (wire(occurred_at="2026-11-26T09:30:00"), "no time zone"),
        (wire(sequence="1"), "sequence is str"),
        (wire(sequence=True), "sequence is bool"),
        (wire(payload={"user_id": "42", "channel": "web"}), "user_id is str, expected int"),
        (wire(payload={"user_id": 42, "channel": "web", "password": "x"}), "unknown fields: password"),
        (wire(payload={}), "lacks fields: channel, user_id"),
        (wire(payload=[42]), "not an object"),
        (wire(causation_id=7), "causation_id"),
    ],
)
def test_poison_is_named_precisely(raw: object, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason.replace("(", r"\(")):
        Envelope.from_dict(raw)
