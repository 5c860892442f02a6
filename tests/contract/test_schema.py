"""The published JSON Schemas and the decoder agree, sample by sample and mistake by mistake.

eventbus/contract/schema.py derives each payload's schema from the decoder's
own source (``catalogue._shape``). Here both judge the same inputs: every
golden sample (tests/contract/golden) the schema accepts and the decoder
decodes; every way of spoiling a current payload (a required field missing,
a field nobody declared, a scalar of the wrong JSON type, ``true`` for an
integer) both refuse. Validation is ``jsonschema``'s Draft7Validator, the
dialect AsyncAPI 3.0's default schema format accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from jsonschema import Draft7Validator

from eventbus.contract import catalogue
from eventbus.contract.envelope import ENVELOPE_FIELDS, Envelope
from eventbus.contract.errors import EventDeclarationError, PoisonMessage
from eventbus.contract.schema import envelope_schema, payload_schema
from tests.contract.golden import samples

TYPES = catalogue.all_types()
WRONG_SCALARS: dict[str, Any] = {"string": 42, "integer": "42", "number": "4.2", "boolean": "yes"}


def current_sample(declared: catalogue.EventType) -> dict[str, Any]:
    wire = samples().get((declared.name, declared.version))
    assert wire is not None, f"tests/contract/golden/{declared.name}/v{declared.version}.json is missing"
    return wire


def validator(declared: catalogue.EventType) -> Draft7Validator:
    schema = payload_schema(declared)
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def spoiled(declared: catalogue.EventType) -> list[tuple[str, dict[str, Any]]]:
    """Each way to spoil the type's current golden payload, named."""
    payload = current_sample(declared)["payload"]
    schema = payload_schema(declared)
    found = [("unknown field", {**payload, "unexpected": 1})]
    for name in schema["required"]:
        found.append((f"{name} missing", {k: v for k, v in payload.items() if k != name}))
    for name, property_schema in schema["properties"].items():
        kind = property_schema.get("type")
        if not isinstance(kind, str):
            continue
        if kind in WRONG_SCALARS:
            found.append((f"{name} of the wrong type", {**payload, name: WRONG_SCALARS[kind]}))
        if kind == "integer":
            found.append((f"{name} a bool", {**payload, name: True}))
    return found


@pytest.mark.parametrize("declared", TYPES, ids=lambda t: t.name)
def test_the_schema_accepts_and_the_decoder_decodes_the_current_sample(declared: catalogue.EventType) -> None:
    payload = current_sample(declared)["payload"]

    assert list(validator(declared).iter_errors(payload)) == []
    declared.decode_payload(payload)


@pytest.mark.parametrize("key", sorted(samples()), ids=lambda k: f"{k[0]}-v{k[1]}")
def test_every_published_sample_decodes_into_a_payload_the_current_schema_accepts(key: tuple[str, int]) -> None:
    # An older version reaches the current one through its upcasters when read.
    decoded = Envelope.from_dict(samples()[key]).to_dict()

    assert list(validator(catalogue.get(key[0])).iter_errors(decoded["payload"])) == []
    assert list(Draft7Validator(envelope_schema()).iter_errors(decoded)) == []


@pytest.mark.parametrize("declared", TYPES, ids=lambda t: t.name)
def test_schema_and_decoder_refuse_the_same_spoiled_payloads(declared: catalogue.EventType) -> None:
    cases = spoiled(declared)
    assert len(cases) > 1, "nothing but an unknown field to try"

    for name, payload in cases:
        assert list(validator(declared).iter_errors(payload)), f"the schema accepts {declared.name}: {name}"
        with pytest.raises(PoisonMessage):
            declared.decode_payload(payload)


def test_the_envelope_schema_requires_every_field_the_decoder_requires() -> None:
    schema = envelope_schema()
    wire = current_sample(catalogue.get("user.signed_up"))

    assert schema["required"] == list(ENVELOPE_FIELDS) == list(schema["properties"])
    for name in ENVELOPE_FIELDS:
        lacking = {k: v for k, v in wire.items() if k != name}
        assert list(Draft7Validator(schema).iter_errors(lacking)), name
        with pytest.raises(PoisonMessage, match="lacks fields"):
            Envelope.from_dict(lacking)


@dataclass(frozen=True)
class Shapes:
    """Every annotation a payload may use."""

    count: int
    ratio: float
    label: str | None
    tags: list[str]
    extra: dict[str, Any]
    rows: list[dict[str, Any]]
    flag: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WithDatetime:
    at: datetime


def test_each_annotation_has_its_json_schema_and_defaults_make_a_field_optional() -> None:
    schema = payload_schema(catalogue.EventType(name="tests.shapes", version=3, payload_class=Shapes))

    assert schema == {
        "title": "tests.shapes v3",
        "description": "Every annotation a payload may use.",
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "label": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "extra": {"type": "object"},
            "rows": {"type": "array", "items": {"type": "object"}},
            "flag": {"type": "boolean", "default": False},
            "notes": {"type": "array", "items": {"type": "string"}, "default": []},
        },
        "required": ["count", "ratio", "label", "tags", "extra", "rows"],
        "additionalProperties": False,
    }


def test_an_annotation_json_cannot_carry_is_refused_rather_than_published() -> None:
    with pytest.raises(EventDeclarationError, match=r"tests\.when\.at"):
        payload_schema(catalogue.EventType(name="tests.when", version=1, payload_class=WithDatetime))


def test_the_spoiling_covers_every_kind_of_mistake() -> None:
    names = {name for name, _ in spoiled(catalogue.get("user.signed_up"))}

    assert {"unknown field", "user_id missing", "user_id of the wrong type", "user_id a bool"} <= names
