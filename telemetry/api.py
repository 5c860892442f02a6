"""``/api/v1/``: devices post readings in batches (django-ninja; OpenAPI at ``/api/v1/openapi.json``).

``POST /api/v1/readings`` answers 202 with the counts of accepted and
duplicate readings once the batch is committed; 400 lists every malformed
reading (index, field, message) and accepts none of the request; 409 lists
the new metric names that would take the device past
TELEMETRY_MAX_METRICS_PER_DEVICE and accepts none of it either; 401, 413,
415 and 429 come from the door (telemetry/door.py) before the body is parsed;
503 with Retry-After when the database cannot take the batch now (stopped,
restarting, failing over): nothing was accepted, and the device sends it again.

Why 409 for the metric names: nothing in the request is malformed (400),
and waiting does not help (429); the device's own state, the names it
already has, conflicts with the request, which goes through unchanged once
the operator raises the limit.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Status
from ninja.errors import HttpError, ValidationError
from ninja.security.base import AuthBase

from telemetry import ingest
from telemetry.door import DoorRefusal, admit
from telemetry.metric_names import TooManyMetrics
from telemetry.models import Device
from telemetry.schemas import Accepted, Invalid, ItemError, ReadingBatch, Refused, Throttled

api = NinjaAPI(
    title="Event demo telemetry API",
    version="1",
    description="Devices send readings in batches; each accepted batch is one event on the bus.",
    urls_namespace="telemetry-api",
    openapi_url="/openapi.json",
    docs_url="/docs",
)


REFUSED = "nothing of this request was accepted; fix these readings and send it again"
REFUSED_NAMES = "nothing of this request was accepted; send readings of the names it has, or have the limit raised"


class DeviceToken(AuthBase):
    """Bearer token auth that also runs the door's other checks (they need the device)."""

    openapi_type = "http"
    openapi_scheme = "bearer"

    def __call__(self, request: HttpRequest) -> Device:
        return admit(request)


@api.exception_handler(DoorRefusal)
def _refused(request: HttpRequest, exc: DoorRefusal) -> HttpResponse:
    body: dict[str, Any] = {"detail": exc.detail}
    if exc.retry_after is not None:
        body["retry_after"] = exc.retry_after
    response = api.create_response(request, body, status=exc.status)
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="telemetry"'
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response


DATABASE_RETRY_AFTER = 10
"""Seconds a device is asked to wait when the database cannot take its batch: about a restart's length."""


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def _database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The database is stopped, restarting or failing over: the device keeps its batch and sends it again
    # (the readings' sequence numbers make that safe), as after a 429; a 500 would say the batch is at fault.
    body = Throttled(
        detail="the database is briefly unavailable; nothing was accepted", retry_after=DATABASE_RETRY_AFTER
    )
    response = api.create_response(request, body.model_dump(), status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return _bad_request(request, [_item_error(error) for error in exc.errors])


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400:
        # ninja's "Cannot parse request body": the JSON itself is broken.
        cause = exc.__cause__
        message = f"not valid JSON: {cause}" if isinstance(cause, json.JSONDecodeError) else str(exc)
        return _bad_request(request, [ItemError(index=None, field="body", message=message)])
    return api.create_response(request, {"detail": str(exc)}, status=exc.status_code)


def _bad_request(request: HttpRequest, errors: list[ItemError]) -> HttpResponse:
    body = Invalid(detail=REFUSED, errors=errors)
    return api.create_response(request, body.model_dump(), status=400)


def _item_error(error: dict[str, Any]) -> ItemError:
    """One pydantic error as (index, field, message): ``("body", "batch", "readings", 3, "value")`` → 3, value."""
    loc = [part for part in error.get("loc", ()) if part not in ("body", "batch")]
    index: int | None = None
    field = "body"
    if loc and loc[0] == "readings":
        rest = loc[1:]
        if rest and isinstance(rest[0], int):
            index, rest = rest[0], rest[1:]
            field = ".".join(str(p) for p in rest) or "reading"
        else:
            field = "readings"
    elif loc:
        field = ".".join(str(p) for p in loc)
    message = str(error.get("msg", "invalid"))
    return ItemError(index=index, field=field, message=message.removeprefix("Value error, "))


@api.post(
    "/readings",
    auth=DeviceToken(),
    response={
        202: Accepted,
        400: Invalid,
        401: Refused,
        409: Invalid,
        413: Refused,
        415: Refused,
        429: Throttled,
        503: Throttled,
    },
    summary="Send a batch of readings",
    openapi_extra={
        "responses": {
            401: {"headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
            429: {"headers": {"Retry-After": {"schema": {"type": "integer"}}}},
            503: {"headers": {"Retry-After": {"schema": {"type": "integer"}}}},
        }
    },
)
def post_readings(request: HttpRequest, batch: ReadingBatch) -> Status[Accepted | Invalid]:
    """Record up to 500 readings of the calling device, once each; one event for the new ones."""
    errors = _repeated_seqs(batch)
    if errors:
        return Status(400, Invalid(detail=REFUSED, errors=errors))
    try:
        outcome = ingest.accept(request.auth, batch.readings)  # type: ignore[attr-defined]
    except TooManyMetrics as exc:
        return Status(409, Invalid(detail=f"{exc}; {REFUSED_NAMES}", errors=_new_names(batch, exc)))
    return Status(202, Accepted(accepted=outcome.accepted, duplicates=outcome.duplicates))


def _new_names(batch: ReadingBatch, exc: TooManyMetrics) -> list[ItemError]:
    """The first reading of each new name."""
    first: dict[str, int] = {}
    for index, reading in enumerate(batch.readings):
        first.setdefault(reading.metric, index)
    message = f"a new metric name, beyond this device's limit of {exc.limit}"
    return [ItemError(index=first[name], field="metric", message=message) for name in exc.new]


def _repeated_seqs(batch: ReadingBatch) -> list[ItemError]:
    first: dict[int, int] = {}
    errors: list[ItemError] = []
    for index, reading in enumerate(batch.readings):
        if reading.seq in first:
            message = f"{reading.seq} is also the seq of reading {first[reading.seq]}; each reading needs its own seq"
            errors.append(ItemError(index=index, field="seq", message=message))
        else:
            first.setdefault(reading.seq, index)
    return errors
