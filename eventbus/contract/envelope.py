"""The event envelope: a fixed set of fields around a typed payload, JSON on the wire."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventbus.contract import catalogue
from eventbus.contract.errors import PoisonMessage

ENVELOPE_FIELDS = (
    "id",
    "type",
    "version",
    "occurred_at",
    "aggregate",
    "sequence",
    "correlation_id",
    "causation_id",
    "payload",
)


@dataclass(frozen=True)
class Envelope:
    """One event. ``payload`` is the declared dataclass of ``type``.

    ``sequence`` increases per ``aggregate`` (for example ``user:42``), so a
    consumer that needs order can detect a gap and every consumer can ignore a
    stale event. ``correlation_id`` is the id of the request that caused it.
    """

    id: uuid.UUID
    type: str
    version: int
    occurred_at: datetime
    aggregate: str
    sequence: int
    correlation_id: str
    causation_id: str | None
    payload: Any

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready wire form."""
        return {
            "id": str(self.id),
            "type": self.type,
            "version": self.version,
            "occurred_at": self.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "aggregate": self.aggregate,
            "sequence": self.sequence,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "payload": dataclasses.asdict(self.payload),
        }

    @classmethod
    def from_dict(cls, raw: Any) -> Envelope:
        """Decode and validate the wire form, an older version upcast to the current one;
        raise PoisonMessage saying what is wrong."""
        if not isinstance(raw, dict):
            raise PoisonMessage(f"envelope is {type(raw).__name__}, not an object")
        missing = [name for name in ENVELOPE_FIELDS if name not in raw]
        if missing:
            raise PoisonMessage(f"envelope lacks fields: {', '.join(missing)}")
        declared = catalogue.get(_typed(raw, "type", str))
        # An older version is upcast first (eventbus/contract/catalogue.py), then
        # decoded and validated as the current one: the consumer never sees it.
        payload = declared.upcast(_typed(raw, "version", int), raw["payload"])
        try:
            event_id = uuid.UUID(_typed(raw, "id", str))
        except ValueError:
            raise PoisonMessage(f"envelope id {raw['id']!r} is not a UUID") from None
        try:
            occurred_at = datetime.fromisoformat(_typed(raw, "occurred_at", str))
        except ValueError:
            raise PoisonMessage(f"occurred_at {raw['occurred_at']!r} is not ISO 8601") from None
        if occurred_at.tzinfo is None:
            raise PoisonMessage("occurred_at has no time zone")
        causation = raw["causation_id"]
        if causation is not None and not isinstance(causation, str):
            raise PoisonMessage("causation_id must be a string or null")
        return cls(
            id=event_id,
            type=declared.name,
            version=declared.version,
            occurred_at=occurred_at,
            aggregate=_typed(raw, "aggregate", str),
            sequence=_typed(raw, "sequence", int),
            correlation_id=_typed(raw, "correlation_id", str),
            causation_id=causation,
            payload=declared.decode_payload(payload),
        )


def _typed(raw: dict[str, Any], name: str, expected: type) -> Any:
    value = raw[name]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise PoisonMessage(f"envelope field {name} is {type(value).__name__}, expected {expected.__name__}")
    return value


#: The envelope's fields a task message's ``argsrepr`` names; never the payload.
_SUMMARY_FIELDS = ("id", "type", "version", "aggregate", "sequence")


def args_summary(wire: Mapping[str, Any]) -> str:
    """The ``argsrepr`` header of a subscriber task's message: the event's identity, its payload left out.

    Flower and the result rows show a task's arguments from this header.
    Celery's own is a ``saferepr`` of the whole envelope, which costs the
    request a slow pure-Python repr per event (figure 4, docs/benchmarks.md)
    and puts the payload's data into every monitoring view. This is the
    ``repr`` of the arguments with the payload elided, e.g. ``({'id': '…',
    'type': 'user.signed_up', 'version': 1, 'aggregate': 'user:7',
    'sequence': 1, 'payload': '...'},)``: still the form Flower shows, still
    searchable by event id.
    """
    summary = {name: wire.get(name) for name in _SUMMARY_FIELDS}
    summary["payload"] = "..."
    return repr((summary,))
