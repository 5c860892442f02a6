"""The AsyncAPI 3.0 document: valid against the official schema, complete, served, and checked in current.

Validation uses the official AsyncAPI 3.0.0 JSON Schema, vendored from the
npm package the AsyncAPI tools themselves validate with (ORIGIN below), and
the Python ``jsonschema`` the test suite already pins. Not ``npx
@asyncapi/cli validate``: that downloads a Node tool chain at test time (CI
time, and a network the tests otherwise never need) to apply this same
schema; its further semantic checks (references resolve, an operation's
messages belong to its channel) are written out below. A document spoiled on
purpose must fail, or the check could never fail.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from jsonschema import Draft7Validator

from eventbus.contract import catalogue, registry
from eventbus.contract.asyncapi import document, render
from eventbus.contract.schema import payload_schema
from tests.conftest import REPO

OFFICIAL = Path(__file__).parent / "asyncapi-3.0.0.schema.json"
ORIGIN = {
    "package": "@asyncapi/specs",
    "version": "6.11.1",
    "path in the package": "schemas/3.0.0.json",
    "taken with": "npm pack @asyncapi/specs@6.11.1 (same bytes as tag v6.11.1 of asyncapi/spec-json-schemas)",
    "sha256": "d4571a420e6ffb7fcc7066c95a6db1202f299a3c51daa103d0706bf30f95e626",
}
CHECKED_IN = REPO / "docs" / "asyncapi.json"
REWRITE = ".venv/bin/python manage.py asyncapi --output docs/asyncapi.json"


def official_errors(candidate: dict[str, Any]) -> list[str]:
    schema = json.loads(OFFICIAL.read_text())
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft7Validator(schema).iter_errors(candidate)
    ]


def resolve(root: dict[str, Any], ref: str) -> Any:
    """The target of a local ``$ref`` (a JSON Pointer); KeyError when it leads nowhere."""
    assert ref.startswith("#/"), ref
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if isinstance(node.get("$ref"), str) else []) + [
            r for v in node.values() for r in refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_vendored_schema_is_the_official_one_named_in_its_origin() -> None:
    assert hashlib.sha256(OFFICIAL.read_bytes()).hexdigest() == ORIGIN["sha256"]
    assert json.loads(OFFICIAL.read_text())["properties"]["asyncapi"]["const"] == "3.0.0"


def test_the_document_is_valid_asyncapi_3() -> None:
    assert official_errors(document()) == []


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d["info"].pop("version"),
        lambda d: d.update(asyncapi="2.6.0"),
        lambda d: d["operations"]["analytics.record_event"].update(action="subscribe"),
        lambda d: d["channels"]["analytics"].update(queue="analytics"),
        lambda d: d["components"]["messages"]["user.signed_up"].update(payload="user_id"),
    ],
    ids=["no info.version", "version 2.6.0", "a 2.x verb", "an unknown channel field", "a payload not a schema"],
)
def test_a_spoiled_document_fails_the_validation(spoil: Any) -> None:
    spoiled = copy.deepcopy(document())
    spoil(spoiled)

    assert official_errors(spoiled) != []


def test_every_reference_resolves_and_every_operation_sends_its_channel_messages() -> None:
    generated = document()

    for ref in refs(generated):
        resolve(generated, ref)
    for name, operation in generated["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), f"{name}: {message} is not on {channel}"


def test_every_event_type_is_a_message_with_its_version_and_payload_schema() -> None:
    generated = document()
    messages, schemas = generated["components"]["messages"], generated["components"]["schemas"]

    assert set(messages) == {t.name for t in catalogue.all_types()}
    for declared in catalogue.all_types():
        message = messages[declared.name]
        assert message["x-eventbus-version"] == declared.version
        assert message["title"] == f"{declared.name} v{declared.version}"
        assert f"{declared.name}.v{declared.version}" in schemas
    assert messages["telemetry.readings_received"]["x-eventbus-producer"] == "telemetry"
    assert messages["user.signed_up"]["x-eventbus-producer"] == "signups"


def test_each_subscriber_queue_is_a_channel_and_each_subscriber_receives_on_it() -> None:
    generated = document()

    assert set(generated["channels"]) == {s.queue for s in registry.all_subscriptions()}
    for subscription in registry.all_subscriptions():
        operation = generated["operations"][subscription.name]
        assert operation["action"] == "receive"
        assert operation["channel"] == {"$ref": f"#/channels/{subscription.queue}"}
        for name in subscription.event_types:
            assert name in generated["channels"][subscription.queue]["messages"]
    # the telemetry API's event, on its queue, sent by the app whose API accepts the readings
    assert generated["operations"]["telemetry.send.telemetry"]["messages"] == [
        {"$ref": "#/channels/telemetry/messages/telemetry.readings_received"}
    ]
    assert generated["operations"]["signups.send.analytics"]["action"] == "send"


def test_the_description_states_the_delivery_semantics() -> None:
    words = document()["info"]["description"]

    for promise in ("At least once", "effect once", "ledger", "Per aggregate", "dead-letter", "outbox", "upcast"):
        assert promise in words


def test_the_checked_in_document_is_current() -> None:
    assert CHECKED_IN.read_text() == render(document()), f"docs/asyncapi.json is stale: run `{REWRITE}`"


def test_the_command_writes_the_document_and_its_check_fails_on_a_stale_copy(tmp_path: Path) -> None:
    written = tmp_path / "asyncapi.json"
    call_command("asyncapi", output=str(written))
    call_command("asyncapi", check=str(written))
    assert json.loads(written.read_text()) == document()

    written.write_text(written.read_text().replace('"3.0.0"', '"3.0.1"'))
    with pytest.raises(CommandError, match=r"(?s)not the current document.*-  \"asyncapi\": \"3\.0\.1\"") as failed:
        call_command("asyncapi", check=str(written))
    assert failed.value.returncode == 1


@pytest.mark.django_db
def test_the_document_and_the_current_schemas_are_served_to_anyone(client: Client) -> None:
    response = client.get("/events/asyncapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == document()

    declared = catalogue.get("user.signed_up")
    url = f"/events/schemas/user.signed_up/v{declared.version}.json"
    schema = client.get(url)
    assert schema.status_code == 200
    assert schema["Content-Type"] == "application/schema+json"
    assert schema.json()["$id"] == f"http://testserver{url}"
    assert schema.json()["properties"] == payload_schema(declared)["properties"]


@pytest.mark.django_db
def test_an_older_version_is_gone_and_an_unknown_one_not_found(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    versioned = catalogue.EventType(
        name="tests.versioned", version=3, payload_class=catalogue.get("user.signed_up").payload_class
    )
    monkeypatch.setitem(catalogue._by_name, versioned.name, versioned)

    assert client.get("/events/schemas/tests.versioned/v3.json").status_code == 200
    gone = client.get("/events/schemas/tests.versioned/v2.json")
    assert gone.status_code == 410
    assert gone.json()["current"] == "http://testserver/events/schemas/tests.versioned/v3.json"
    assert client.get("/events/schemas/tests.versioned/v4.json").status_code == 404
    assert client.get("/events/schemas/tests.nothing/v1.json").status_code == 404


@pytest.mark.django_db
def test_the_catalogue_page_lists_types_versions_fields_producers_subscribers_and_queues(client: Client) -> None:
    page = client.get("/events/").content.decode()

    for declared in catalogue.all_types():
        assert f'id="type-{declared.name}"' in page
    for subscription in registry.all_subscriptions():
        assert subscription.name in page
        assert f"<code>{subscription.queue}</code>" in page
    assert "version 1" in page
    assert "<code>user_id</code></td><td>integer</td>" in page
    assert "<code>readings</code></td><td>array of object</td>" in page
    assert '<strong class="producer">signups</strong>' in page
    assert 'href="/events/asyncapi.json"' in page
