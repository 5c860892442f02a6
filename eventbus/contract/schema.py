"""JSON Schemas (draft-07) of the payloads and the envelope: the contract as other teams read it.

A payload's schema is worked out from the same source the decoder reads,
``catalogue._shape`` (the payload class's resolved field types and its
dataclass fields), so the published schema and the decoder cannot drift: a
field added, dropped, retyped or given a default changes both at once.
tests/contract/test_schema.py holds them to agreeing on every golden sample and
on each way a payload can be wrong.

An annotation that JSON cannot carry (a datetime, a nested dataclass, a
tuple) raises :class:`EventDeclarationError` here, rather than publishing a
schema that promises what the decoder does not do.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any

from eventbus.contract import catalogue
from eventbus.contract.envelope import ENVELOPE_FIELDS
from eventbus.contract.errors import EventDeclarationError

DRAFT_07 = "http://json-schema.org/draft-07/schema#"

_SCALARS: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}

# The wire form of each envelope field (Envelope.to_dict), in words a consumer can act on.
_ENVELOPE_PROPERTIES: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "format": "uuid", "description": "The event's id: the same on every copy and retry."},
    "type": {"type": "string", "description": "The event type's name in the catalogue, e.g. user.signed_up."},
    "version": {"type": "integer", "description": "The version of the payload's schema the producer wrote."},
    "occurred_at": {"type": "string", "format": "date-time", "description": "When it happened, ISO 8601 in UTC."},
    "aggregate": {"type": "string", "description": "What it is about, e.g. user:42; order holds per aggregate."},
    "sequence": {"type": "integer", "description": "Its place in the aggregate's history, counting from 1."},
    "correlation_id": {"type": "string", "description": "The request or command that caused it."},
    "causation_id": {"type": ["string", "null"], "description": "The event that caused this one, if any."},
    "payload": {"type": "object", "description": "The event type's payload, per its schema."},
}


def payload_schema(event_type: catalogue.EventType) -> dict[str, Any]:
    """The JSON Schema of ``event_type``'s current payload: every field, the required ones, no others."""
    hints, fields = catalogue._shape(event_type.payload_class)
    properties = {}
    required = []
    for name, field in fields.items():
        where = f"{event_type.name}.{name}"
        properties[name] = _annotation_schema(hints[name], where)
        default = _default(field)
        if default is dataclasses.MISSING:
            required.append(name)
        else:
            properties[name]["default"] = default
    schema: dict[str, Any] = {
        "title": f"{event_type.name} v{event_type.version}",
        "type": "object",
        "properties": properties,
        "required": required,
        # The decoder refuses a field it does not know.
        "additionalProperties": False,
    }
    if description := _description(event_type.payload_class):
        schema["description"] = description
    return schema


def envelope_schema() -> dict[str, Any]:
    """The envelope's wire form: every field required (the decoder refuses a message lacking one)."""
    return {
        "title": "Envelope",
        "type": "object",
        "description": "One event on the wire: identity, order and causes around the typed payload.",
        "properties": {name: dict(_ENVELOPE_PROPERTIES[name]) for name in ENVELOPE_FIELDS},
        "required": list(ENVELOPE_FIELDS),
    }


def standalone(schema: dict[str, Any], schema_id: str) -> dict[str, Any]:
    """``schema`` as a document of its own, served at ``schema_id``: dialect and identity at its top."""
    return {"$schema": DRAFT_07, "$id": schema_id, **schema}


def _annotation_schema(annotation: Any, where: str) -> dict[str, Any]:
    if annotation is Any:
        return {}
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [_annotation_schema(member, where) for member in arguments]
        if all(set(member) == {"type"} for member in members):
            return {"type": [member["type"] for member in members]}
        return {"anyOf": members}
    if annotation is type(None):
        return {"type": "null"}
    if annotation is list or origin is list:
        return {"type": "array", **({"items": _annotation_schema(arguments[0], where)} if arguments else {})}
    if annotation is dict or (origin is dict and arguments[:1] == (str,)):
        values = _annotation_schema(arguments[1], where) if arguments else {}
        return {"type": "object", **({"additionalProperties": values} if values else {})}
    raise EventDeclarationError(f"payload field {where}: {annotation!r} has no JSON form the decoder reads")


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _description(payload_class: type) -> str | None:
    # A dataclass without a docstring is given its signature as one: that says nothing new.
    doc = inspect.getdoc(payload_class)
    if doc is None or doc.startswith(f"{payload_class.__name__}("):
        return None
    return " ".join(doc.split())
