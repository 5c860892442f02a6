"""CloudEvents 1.0, the envelope's public form: every event type, both HTTP modes, checked with the official SDK.

Our side is plain Python (eventbus/contract/cloudevents.py); the other side
is the CloudEvents Python SDK's current API (``cloudevents.core``, not the
legacy ``cloudevents.v1``), as a consumer in another service would use it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from eventbus.contract import cloudevents
from eventbus.contract.envelope import Envelope
from eventbus.contract.errors import PoisonMessage
from eventbus.operations.checks import contract_problems
from tests.contract.golden import latest

SOURCE = "https://example.com"
SCHEMAS = "https://example.com/events/schemas"
TYPES = sorted(latest())
MODES = ("structured", "binary")
STANDARD = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "data"}


@pytest.fixture(autouse=True)
def _contract_settings(settings: Any) -> None:
    settings.EVENTBUS_SOURCE = SOURCE
    settings.EVENTBUS_SCHEMA_URL = SCHEMAS


def envelope_of(name: str) -> Envelope:
    """The event type's newest golden sample, decoded as a consumer decodes it."""
    return Envelope.from_dict(latest()[name])


def sdk_attributes(event: dict[str, Any]) -> dict[str, Any]:
    """Our structured form's attributes as the SDK holds them: all but ``data``, the time a datetime."""
    attributes = {name: value for name, value in event.items() if name != "data"}
    attributes["time"] = datetime.fromisoformat(attributes["time"])
    return attributes


def test_the_structured_form_of_an_event() -> None:
    event = cloudevents.to_cloudevent(envelope_of("user.email_verified"))

    assert event == {
        "specversion": "1.0",
        "id": "1c7a4d9f-6e2b-4a7f-8b72-4d3e8f9a0b12",
        "source": SOURCE,
        "type": "user.email_verified",
        "subject": "user:42",
        "time": "2026-12-07T09:00:02.123456Z",
        "datacontenttype": "application/json",
        "dataschema": f"{SCHEMAS}/user.email_verified/v1.json",
        "dataversion": "1",
        "subjectsequence": "2",
        "correlationid": "5f0d7a2c9b8e4f1a",
        "data": {"user_id": 42},
    }


@pytest.mark.parametrize("name", TYPES)
def test_extension_attributes_follow_the_naming_rules(name: str) -> None:
    envelope = dataclasses.replace(envelope_of(name), causation_id="cause-1")

    extensions = set(cloudevents.to_cloudevent(envelope)) - STANDARD

    assert extensions == {"dataversion", "subjectsequence", "correlationid", "causationid"}
    assert all(re.fullmatch(r"[a-z0-9]{1,20}", attribute) for attribute in extensions)


@pytest.mark.parametrize("name", TYPES)
def test_the_structured_form_round_trips_through_json(name: str) -> None:
    envelope = envelope_of(name)

    decoded = cloudevents.from_cloudevent(json.loads(json.dumps(cloudevents.to_cloudevent(envelope))))

    assert decoded == envelope


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", TYPES)
def test_our_http_message_is_the_same_event_to_the_sdk(name: str, mode: Any) -> None:
    envelope = envelope_of(name)
    expected = cloudevents.to_cloudevent(envelope)

    headers, body = cloudevents.to_http(envelope, mode)
    event = from_http(HTTPMessage(headers, body), JSONFormat())

    assert isinstance(event, CloudEvent)  # the SDK validated it as 1.0
    assert event.get_attributes() == sdk_attributes(expected)
    assert event.get_data() == expected["data"]
    assert any(header.startswith("ce-") for header in headers) == (mode == "binary")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", TYPES)
def test_the_sdks_http_message_of_the_event_decodes_to_an_equal_envelope(name: str, mode: str) -> None:
    envelope = envelope_of(name)
    structured = cloudevents.to_cloudevent(envelope)
    event = CloudEvent(sdk_attributes(structured), structured["data"])

    message = (to_structured if mode == "structured" else to_binary)(event, JSONFormat())

    assert cloudevents.from_http(message.headers, message.body) == envelope


@pytest.mark.parametrize("mode", MODES)
def test_causation_and_text_outside_plain_ascii_survive_both_modes(mode: Any) -> None:
    envelope = dataclasses.replace(
        envelope_of("user.email_verified"),
        aggregate='user:Zoë "42" 100%',
        correlation_id="req 1",
        causation_id="0b6f3c8e-5d1a-4f6e-9a61-3c2d7e8f9a01",
    )

    headers, body = cloudevents.to_http(envelope, mode)

    assert cloudevents.from_http(headers, body) == envelope
    assert from_http(HTTPMessage(headers, body), JSONFormat()).get_subject() == envelope.aggregate
    assert all(value.isascii() and " " not in value for value in headers.values())


def test_header_names_are_case_insensitive() -> None:
    envelope = envelope_of("user.email_verified")
    headers, body = cloudevents.to_http(envelope, "binary")

    assert cloudevents.from_http({name.title(): value for name, value in headers.items()}, body) == envelope


def test_without_a_schema_url_events_name_no_schema(settings: Any) -> None:
    settings.EVENTBUS_SCHEMA_URL = ""

    event = cloudevents.to_cloudevent(envelope_of("user.email_verified"))

    assert "dataschema" not in event
    assert cloudevents.from_cloudevent(event) == envelope_of("user.email_verified")


def test_a_cloudevent_of_another_source_decodes() -> None:
    event = {**cloudevents.to_cloudevent(envelope_of("user.email_verified")), "source": "urn:example:other"}

    assert cloudevents.from_cloudevent(event) == envelope_of("user.email_verified")


def test_extensions_sent_as_json_integers_decode() -> None:
    event = {**cloudevents.to_cloudevent(envelope_of("user.email_verified")), "dataversion": 1, "subjectsequence": 2}

    assert cloudevents.from_cloudevent(event) == envelope_of("user.email_verified")


def structured(**changes: Any) -> dict[str, Any]:
    """A valid structured CloudEvent with ``changes`` (None removes an attribute)."""
    event = cloudevents.to_cloudevent(envelope_of("user.email_verified"))
    event.update(changes)
    return {name: value for name, value in event.items() if value is not None}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ([1, 2], "CloudEvent is list, not an object"),
        (structured(specversion=None), "lacks specversion"),
        (structured(specversion="0.3"), "specversion '0.3' is not '1.0'"),
        (structured(subject=None, time=None), "lacks attributes: subject, time"),
        (structured(correlationid=None), "lacks attributes: correlationid"),
        (structured(source=""), "source is empty"),
        (structured(id=7), "attribute id is int, expected a string"),
        (structured(id="not-a-uuid"), "not a UUID"),
        (structured(time="yesterday"), "time 'yesterday' is not an RFC 3339 timestamp"),
        (structured(time="2026-12-07"), "is not an RFC 3339 timestamp"),
        (structured(time="2026-12-07T09:00:02"), "is not an RFC 3339 timestamp"),
        (structured(time="2026-13-07T09:00:02Z"), "not ISO 8601"),
        (structured(subjectsequence="two"), "subjectsequence is 'two', not a whole number"),
        (structured(dataversion=True), "dataversion is True, not a whole number"),
        (structured(subjectsequence="9" * 5000), "subjectsequence is '9999"),
        (structured(datacontenttype="text/plain"), "datacontenttype 'text/plain' is not JSON"),
        (structured(data=None, data_base64="e30="), "data_base64"),
        (structured(data="not an object"), "not an object"),
        (structured(type="user.exploded"), "unknown event type 'user.exploded'"),
    ],
)
def test_a_malformed_cloudevent_is_poison_saying_why(event: Any, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=re.escape(reason)):
        cloudevents.from_cloudevent(event)


def binary(**header_changes: str | None) -> dict[str, str]:
    headers, _ = cloudevents.to_http(envelope_of("user.email_verified"), "binary")
    headers.update(header_changes)  # type: ignore[arg-type]
    return {name: value for name, value in headers.items() if value is not None}


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({"content-type": "application/cloudevents+json"}, b"{not json", "HTTP body is not JSON"),
        ({"content-type": "application/json"}, b"{}", "neither binary mode nor structured"),
        ({}, b"{}", "neither binary mode nor structured"),
        (binary(), b"not json", "CloudEvent data is not JSON"),
        (binary(), b"\xff\xfe", "CloudEvent data is not JSON"),
        (binary(**{"content-type": "text/plain"}), b'{"user_id": 42}', "datacontenttype 'text/plain' is not JSON"),
        (binary(**{"ce-specversion": None}), b'{"user_id": 42}', "lacks specversion"),
        (binary(**{"ce-specversion": "0.3"}), b'{"user_id": 42}', "specversion '0.3' is not '1.0'"),
        (binary(**{"ce-time": "2026-12-07T09%3A00"}), b'{"user_id": 42}', "not an RFC 3339 timestamp"),
        (binary(**{"ce-subject": "user%FF"}), b'{"user_id": 42}', "header ce-subject is not percent-encoded UTF-8"),
    ],
)
def test_a_malformed_http_message_is_poison_saying_why(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=re.escape(reason)):
        cloudevents.from_http(headers, body)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown CloudEvents HTTP mode 'batch'"):
        cloudevents.to_http(envelope_of("user.email_verified"), "batch")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "source", ["/eventbus", "https://example.com", "urn:example:eventbus", "https://example.com/a%20b", "x/y"]
)
def test_a_uri_reference_is_a_source(source: str) -> None:
    assert contract_problems(source, "") == []


@pytest.mark.parametrize("source", ["", "has space", "ünï", "1http://x", "http://[::1"])
def test_a_source_that_is_no_uri_reference_is_refused_at_start(source: str) -> None:
    (problem,) = contract_problems(source, "")

    assert problem.startswith(f"EVENTBUS_SOURCE ({source!r}) is not a URI-reference")


@pytest.mark.parametrize("url", ["/events/schemas", "ftp://example.com/s", "https://", "https://exa mple.com"])
def test_a_schema_url_must_be_absolute_http(url: str) -> None:
    (problem,) = contract_problems("/eventbus", url)

    assert problem.startswith(f"EVENTBUS_SCHEMA_URL ({url!r}) is not an absolute http(s) URL")
