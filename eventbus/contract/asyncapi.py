"""The AsyncAPI 3.0 document of the catalogue: which events there are, what is in them, on which queue.

Generated from the code on every call, never written by hand: the event
types and their payload schemas come from the catalogue (through
:mod:`eventbus.contract.schema`, the decoder's own source), the channels and
who receives what from the subscriber registry, the producers from the app
that declares each payload class. One channel per subscriber queue (its
address is the queue's name); one ``send`` operation per producing app and
queue, one ``receive`` operation per subscriber, named by its task name.

The output is deterministic (sorted keys, :func:`render`), so the checked-in
docs/asyncapi.json's diff between two commits is what a reviewer reads for a
change to the contract; ``manage.py asyncapi --check`` and a test keep it
current, and the bus serves it at ``<mount>/asyncapi.json`` (eventbus/urls.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.apps import apps

from eventbus.contract import catalogue, registry
from eventbus.contract.schema import envelope_schema, payload_schema

ASYNCAPI_VERSION = "3.0.0"

DESCRIPTION = """\
The events this service's apps publish to each other, carried by its event bus: Celery task \
messages (JSON) on the host's broker, one queue per group of subscribers. Each message's body \
holds the task's one argument, the envelope: the event's identity, order and causes around its \
typed payload.

**Publishing: the transactional outbox.** A producer writes its event in its own database \
transaction; after the commit one message per subscriber goes to that subscriber's queue, and \
a relay sends what the broker missed. A message may come late or twice; never for a \
transaction that rolled back.

**At least once, effect once.** A message is acknowledged after its handler ran and goes back \
to its queue when a worker dies mid-task. Each subscriber records every event it handled in \
its ledger (by event id), in the same transaction as its effect, so a redelivery is skipped. \
A subscriber whose effect leaves the database (an email) is at least once and carries an \
idempotency key.

**Order.** Per aggregate, for subscribers marked `ordered` (`x-eventbus-subscriber`): an \
event waits until the aggregate's earlier ones were handled, and a stale one is ignored. \
Others may see an aggregate's events in any order; `sequence` tells them apart.

**Failures.** A transient failure is retried with backoff, up to the subscriber's \
`max_retries`; a permanent one, or the last retry, goes to the dead-letter queue, is stored, \
and waits for an operator to replay or purge it. A message that cannot be decoded (unknown \
type, a version no upcaster reaches, a payload its schema refuses) is poison: dead-lettered \
at once. Subscribers not marked `critical` may be shed while their queue is above its \
high-water mark.

**Versions.** Each message names its payload's schema version; a subscriber always receives \
the current one, an older message being upcast when it is read. `info.version` is a \
fingerprint of the catalogue: it changes whenever a type, a version or a schema does."""


@dataclass(frozen=True)
class Entry:
    """One event type as the contract publishes it: its schema, who sends it, who receives it."""

    event_type: catalogue.EventType
    producer: str
    """The label of the Django app that declares the payload class."""
    subscriptions: tuple[registry.Subscription, ...]
    schema: dict[str, Any]

    @property
    def schema_key(self) -> str:
        return f"{self.event_type.name}.v{self.event_type.version}"

    @property
    def schema_path(self) -> str:
        """The payload schema's URL, relative to the document's (eventbus/urls.py)."""
        return f"schemas/{self.event_type.name}/v{self.event_type.version}.json"


def entries() -> list[Entry]:
    """Every declared event type, by name."""
    return [
        Entry(
            event_type=declared,
            producer=app_of(declared.payload_class.__module__),
            subscriptions=tuple(registry.subscriptions_for(declared.name)),
            schema=payload_schema(declared),
        )
        for declared in catalogue.all_types()
    ]


def app_of(module: str) -> str:
    """The label of the installed app holding ``module``, else the module's top package."""
    config = apps.get_containing_app_config(module)
    return config.label if config is not None else module.split(".")[0]


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of every event type, queue, producer and subscriber."""
    published = entries()
    by_queue: dict[str, list[registry.Subscription]] = {}
    for subscription in registry.all_subscriptions():
        by_queue.setdefault(subscription.queue, []).append(subscription)
    channels = {queue: _channel(queue, subscriptions) for queue, subscriptions in by_queue.items()}
    operations: dict[str, Any] = {}
    for entry in published:
        for queue in sorted({s.queue for s in entry.subscriptions}):
            send = operations.setdefault(f"{entry.producer}.send.{queue}", _send(entry.producer, queue))
            send["messages"].append({"$ref": _pointer("channels", queue, "messages", entry.event_type.name)})
    for subscription in registry.all_subscriptions():
        operations[subscription.name] = _receive(subscription)
    schemas: dict[str, Any] = {"Envelope": envelope_schema()}
    schemas.update({entry.schema_key: entry.schema for entry in published})
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Events of the event bus",
            "version": _fingerprint(schemas),
            "description": DESCRIPTION,
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": {entry.event_type.name: _message(entry) for entry in published}, "schemas": schemas},
    }


def render(generated: dict[str, Any]) -> str:
    """The document's text: sorted keys and two-space indents, so that its diff reads line by line."""
    return json.dumps(generated, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _channel(queue: str, subscriptions: list[registry.Subscription]) -> dict[str, Any]:
    types = sorted({name for s in subscriptions for name in s.event_types})
    names = ", ".join(s.name for s in subscriptions)
    return {
        "address": queue,
        "title": f"queue {queue}",
        "description": f"The {queue!r} queue: one Celery task message per event for each of its subscribers "
        f"({names}); the task's name is the subscriber's.",
        "messages": {name: {"$ref": _pointer("components", "messages", name)} for name in types},
    }


def _send(producer: str, queue: str) -> dict[str, Any]:
    return {
        "action": "send",
        "channel": {"$ref": _pointer("channels", queue)},
        "title": f"{producer} publishes to {queue}",
        "summary": f"The {producer} app's events, through its outbox, to the subscribers on {queue}.",
        "messages": [],
    }


def _receive(subscription: registry.Subscription) -> dict[str, Any]:
    return {
        "action": "receive",
        "channel": {"$ref": _pointer("channels", subscription.queue)},
        "title": f"{subscription.name} ({subscription.label})",
        "summary": f"The {app_of(subscription.handler.__module__)} app's subscriber {subscription.name}.",
        "messages": [
            {"$ref": _pointer("channels", subscription.queue, "messages", name)}
            for name in sorted(subscription.event_types)
        ],
        "x-eventbus-subscriber": {
            "app": app_of(subscription.handler.__module__),
            "batch": subscription.batch,
            "critical": subscription.critical,
            "max_retries": subscription.retry.max_retries,
            "ordered": subscription.ordered,
            "transactional": subscription.transactional,
        },
    }


def _message(entry: Entry) -> dict[str, Any]:
    declared = entry.event_type
    message: dict[str, Any] = {
        "name": declared.name,
        "title": f"{declared.name} v{declared.version}",
        "summary": f"Published by {entry.producer}; payload schema {entry.schema_path}.",
        "contentType": "application/json",
        "correlationId": {
            "description": "The request or command that caused the event.",
            "location": "$message.payload#/correlation_id",
        },
        # The whole envelope, its type and version fixed, its payload this type's.
        "payload": {
            "allOf": [
                {"$ref": _pointer("components", "schemas", "Envelope")},
                {
                    "properties": {
                        "type": {"const": declared.name},
                        "version": {"const": declared.version},
                        "payload": {"$ref": _pointer("components", "schemas", entry.schema_key)},
                    }
                },
            ]
        },
        "x-eventbus-producer": entry.producer,
        "x-eventbus-schema": entry.schema_path,
        "x-eventbus-version": declared.version,
    }
    if description := entry.schema.get("description"):
        message["description"] = description
    return message


def _pointer(*parts: str) -> str:
    """A JSON Pointer into this document (RFC 6901: ``~`` and ``/`` escaped)."""
    return "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _fingerprint(schemas: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(schemas, sort_keys=True).encode()).hexdigest()
    return f"sha256:{digest[:12]}"
