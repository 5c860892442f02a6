"""CloudEvents 1.0: the envelope's public form, where the bus hands an event to the outside world.

Inside, the bus speaks its own envelope (eventbus/contract/envelope.py); a
consumer in another service, a data pipeline or an auditor reads the standard
one, with any CloudEvents SDK. The mapping is lossless both ways (an Envelope
becomes a CloudEvent and back, equal), plain Python, no SDK at runtime:

- ``id``: the envelope's id (a UUID's text); ``type``: its type (``user.signed_up``);
- ``source``: the setting ``EVENTBUS_SOURCE``, naming this service;
- ``subject``: the aggregate (``user:42``); ``time``: occurred_at (RFC 3339, UTC, ``Z``);
- ``datacontenttype``: ``application/json``; ``data``: the payload;
- ``dataschema``: ``<EVENTBUS_SCHEMA_URL>/<type>/v<version>.json``, the payload's JSON Schema
  as eventbus/urls.py serves it (left out while that setting is empty);
- extension attributes (CloudEvents names: a-z and 0-9, at most 20 characters), each a String:
  ``dataversion`` (the version, ``"2"``), ``subjectsequence`` (the sequence, decimal),
  ``correlationid``, and ``causationid`` (left out when the envelope has none).

Why not the spec's documented ``sequence`` extension: it orders "the events
produced by a unique event source", and ours counts per aggregate (per
``subject``): ``user:7`` and ``user:9`` each start at 1. A consumer that knows
the extension would take ``user:9``'s event 1 as older than ``user:7``'s event
3 of the same source. ``subjectsequence`` says what it counts. It and
``dataversion`` are Strings, not CloudEvents Integers: the Integer type is 32
bits, a sequence is 64, and in HTTP binary mode every attribute is a string
anyway; the decoder also takes a JSON integer.

Decoding goes through ``Envelope.from_dict``, so a CloudEvent gets the same
validation (and upcasting of an older version) as any message; whatever is
wrong with it raises PoisonMessage saying what. ``source`` is not part of an
Envelope: a CloudEvent of another source decodes, and comes back with ours.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote, unquote

from django.conf import settings

from eventbus.contract.envelope import Envelope
from eventbus.contract.errors import PoisonMessage

SPECVERSION = "1.0"
DATA_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"

# The envelope's fields the standard has no attribute for, as extension
# attributes (CloudEvents names: a-z and 0-9 only, at most 20 characters).
VERSION = "dataversion"
SEQUENCE = "subjectsequence"
CORRELATION = "correlationid"
CAUSATION = "causationid"

# RFC 3339's date-time (section 5.6): ``datetime.fromisoformat`` alone would
# also take a date without a time, or an offset without its colon.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
# At most 19 digits: a sequence is 64 bits, and Python refuses to read an int of over 4,300 digits
# with a ValueError that would escape as something other than PoisonMessage.
_DECIMAL = re.compile(r"[0-9]{1,19}")
# The HTTP binding (section 3.1.3.2) leaves printable ASCII as it is in a header,
# except space, double quote and percent, which are percent-encoded like the rest.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' "%')
_CE_HEADER = "ce-"
# What an Envelope cannot do without; the spec itself requires only id, source and type (and specversion).
_REQUIRED = ("id", "source", "type", "subject", "time", VERSION, SEQUENCE, CORRELATION, "data")


def to_cloudevent(envelope: Envelope) -> dict[str, Any]:
    """The structured JSON form of ``envelope`` (the ``application/cloudevents+json`` body)."""
    wire = envelope.to_dict()
    event: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": wire["id"],
        "source": settings.EVENTBUS_SOURCE,
        "type": wire["type"],
        "subject": wire["aggregate"],
        "time": wire["occurred_at"],
        "datacontenttype": DATA_CONTENT_TYPE,
    }
    schema = schema_url(envelope.type, envelope.version)
    if schema:
        event["dataschema"] = schema
    event[VERSION] = str(wire["version"])
    event[SEQUENCE] = str(wire["sequence"])
    event[CORRELATION] = wire["correlation_id"]
    if wire["causation_id"] is not None:
        event[CAUSATION] = wire["causation_id"]
    event["data"] = wire["payload"]
    return event


def schema_url(event_type: str, version: int) -> str:
    """Where the JSON Schema of this version's payload is served; empty when EVENTBUS_SCHEMA_URL is not set."""
    base = settings.EVENTBUS_SCHEMA_URL.rstrip("/")
    return f"{base}/{event_type}/v{version}.json" if base else ""


def from_cloudevent(event: Any) -> Envelope:
    """The Envelope a structured CloudEvent (its JSON object, parsed) carries; PoisonMessage if it is malformed."""
    if not isinstance(event, Mapping):
        raise PoisonMessage(f"CloudEvent is {type(event).__name__}, not an object")
    if "specversion" not in event:
        raise PoisonMessage("CloudEvent lacks specversion")
    if event["specversion"] != SPECVERSION:
        raise PoisonMessage(f"CloudEvent specversion {event['specversion']!r} is not {SPECVERSION!r}")
    if "data_base64" in event:
        raise PoisonMessage("CloudEvent carries data_base64; this bus reads JSON data only")
    # JSON null is an absent attribute (the JSON format, section 2).
    missing = [name for name in _REQUIRED if event.get(name) is None]
    if missing:
        raise PoisonMessage(f"CloudEvent lacks attributes: {', '.join(missing)}")
    for name in ("id", "source", "type", "subject", "time", CORRELATION):
        _string(event, name)
    if not event["source"]:
        raise PoisonMessage("CloudEvent source is empty")
    content_type = event.get("datacontenttype")
    if content_type is not None and not _is_json(_string(event, "datacontenttype")):
        raise PoisonMessage(f"CloudEvent datacontenttype {content_type!r} is not JSON")
    if not _RFC3339.fullmatch(event["time"]):
        raise PoisonMessage(f"CloudEvent time {event['time']!r} is not an RFC 3339 timestamp")
    causation = event.get(CAUSATION)
    return Envelope.from_dict(
        {
            "id": event["id"],
            "type": event["type"],
            "version": _whole(event, VERSION),
            # Upper case: RFC 3339 allows "t" and "z", datetime.fromisoformat does not.
            "occurred_at": event["time"].upper(),
            "aggregate": event["subject"],
            "sequence": _whole(event, SEQUENCE),
            "correlation_id": event[CORRELATION],
            "causation_id": None if causation is None else _string(event, CAUSATION),
            "payload": event["data"],
        }
    )


def to_http(envelope: Envelope, mode: Literal["structured", "binary"] = "structured") -> tuple[dict[str, str], bytes]:
    """The headers and body of an HTTP request or response carrying ``envelope`` in the HTTP binding's ``mode``.

    Structured: the whole CloudEvent is the JSON body. Binary: the body is the
    payload alone, each attribute a ``ce-`` header (``datacontenttype`` the
    Content-Type), so a receiver that knows nothing of CloudEvents still gets
    plain JSON.
    """
    event = to_cloudevent(envelope)
    if mode == "structured":
        return {"content-type": STRUCTURED_CONTENT_TYPE}, json.dumps(event).encode()
    if mode != "binary":
        raise ValueError(f"unknown CloudEvents HTTP mode {mode!r}: 'structured' or 'binary'")
    data = event.pop("data")
    headers = {"content-type": event.pop("datacontenttype")}
    headers.update({_CE_HEADER + name: quote(value, safe=_HEADER_SAFE) for name, value in event.items()})
    return headers, json.dumps(data).encode()


def from_http(headers: Mapping[str, str], body: bytes) -> Envelope:
    """The Envelope an HTTP message in either mode carries (binary when it has ``ce-`` headers, as the SDKs decide)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    content_type = lowered.get("content-type", "")
    if not any(name.startswith(_CE_HEADER) for name in lowered):
        if _media_type(content_type) != STRUCTURED_CONTENT_TYPE:
            raise PoisonMessage(
                f"HTTP message has no ce- headers and Content-Type {content_type!r}: neither binary mode "
                f"nor structured {STRUCTURED_CONTENT_TYPE}"
            )
        return from_cloudevent(_json(body, "HTTP body"))
    event: dict[str, Any] = {}
    for name, value in lowered.items():
        if name.startswith(_CE_HEADER):
            try:
                event[name.removeprefix(_CE_HEADER)] = unquote(value, errors="strict")
            except UnicodeDecodeError:
                raise PoisonMessage(f"header {name} is not percent-encoded UTF-8") from None
    if content_type:
        event["datacontenttype"] = content_type
    if not _is_json(content_type or DATA_CONTENT_TYPE):
        raise PoisonMessage(f"CloudEvent datacontenttype {content_type!r} is not JSON")
    event["data"] = _json(body, "CloudEvent data")
    return from_cloudevent(event)


def _string(event: Mapping[str, Any], name: str) -> str:
    value = event[name]
    if not isinstance(value, str):
        raise PoisonMessage(f"CloudEvent attribute {name} is {type(value).__name__}, expected a string")
    return value


def _whole(event: Mapping[str, Any], name: str) -> int:
    """An extension carrying a whole number: a decimal String (what we send), or a JSON integer."""
    value = event[name]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return int(value)
    shown = value if not isinstance(value, str) or len(value) <= 40 else f"{value[:40]}... ({len(value)} characters)"
    raise PoisonMessage(f"CloudEvent attribute {name} is {shown!r}, not a whole number")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(content_type: str) -> bool:
    media = _media_type(content_type)
    return media in ("application/json", "text/json") or media.endswith("+json")


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PoisonMessage(f"{what} is not JSON") from None
