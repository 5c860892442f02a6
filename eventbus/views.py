"""The published contract, served: the AsyncAPI document, each payload's JSON Schema, and the catalogue page.

Public, read only: they describe the event types, never an event's data (as
a REST API's OpenAPI description is public). The host mounts them with
``path("events/", include("eventbus.urls"))``.

A payload schema is served for the version the code decodes into, the
current one. An older version's schema is not kept: its messages are upcast
when read, so its URL answers 410 Gone and names the current version's;
a type or a version that never existed is 404.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from eventbus.contract import asyncapi, catalogue, registry
from eventbus.contract.errors import PoisonMessage
from eventbus.contract.schema import payload_schema, standalone

JSON_SCHEMA = "application/schema+json"


@require_safe
def asyncapi_json(request: HttpRequest) -> HttpResponse:
    return HttpResponse(asyncapi.render(asyncapi.document()), content_type="application/json")


@require_safe
def payload_schema_json(request: HttpRequest, name: str, version: int) -> HttpResponse:
    try:
        declared = catalogue.get(name)
    except PoisonMessage:
        return JsonResponse({"error": f"no event type {name!r}"}, status=404)
    if version == declared.version:
        schema = standalone(payload_schema(declared), request.build_absolute_uri())
        return JsonResponse(schema, content_type=JSON_SCHEMA, json_dumps_params={"indent": 2})
    if 1 <= version < declared.version:
        current = reverse("eventbus:schema", args=[name, declared.version])
        return JsonResponse(
            {
                "error": f"version {version} of {name} is not the current one ({declared.version}): its messages "
                "are upcast when read, and its schema is not kept",
                "current": request.build_absolute_uri(current),
            },
            status=410,
        )
    return JsonResponse({"error": f"{name} has no version {version} (current: {declared.version})"}, status=404)


@require_safe
def catalogue_page(request: HttpRequest) -> HttpResponse:
    """The catalogue for a person: each type's version, fields, producer, subscribers and queues."""
    types = [
        {
            "entry": entry,
            "fields": [
                {
                    "name": name,
                    "type": type_text(schema),
                    "required": name in entry.schema["required"],
                    "default": json.dumps(schema["default"]) if "default" in schema else None,
                }
                for name, schema in entry.schema["properties"].items()
            ],
        }
        for entry in asyncapi.entries()
    ]
    queues: dict[str, list[registry.Subscription]] = {}
    for subscription in registry.all_subscriptions():
        queues.setdefault(subscription.queue, []).append(subscription)
    return render(
        request,
        "eventbus/catalogue.html",
        {"types": types, "queues": sorted(queues.items())},
    )


def type_text(schema: dict[str, Any]) -> str:
    """A field's JSON type in words: ``integer``, ``string or null``, ``array of object``."""
    if "anyOf" in schema:
        return " or ".join(type_text(member) for member in schema["anyOf"])
    kind = schema.get("type")
    if kind is None:
        return "any"
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array" and "items" in schema:
        return f"array of {type_text(schema['items'])}"
    if kind == "object" and "additionalProperties" in schema:
        return f"object of {type_text(schema['additionalProperties'])}"
    return str(kind)
