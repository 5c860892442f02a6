"""The API's door: who is calling, in what format, how much, and whether the system can take it now.

Every check here runs before the body is parsed, cheapest first, so that
refusing a request costs little: a bad token (401), an unknown content type
(415), a body over 1 MiB (413), a device above TELEMETRY_DEVICE_RATE or a
telemetry queue above its high-water mark (429 with Retry-After). A 429 is
counted per device in Redis (``telemetry_throttled_total`` in /metrics).

The protective side systems must not turn into a single point of failure:
when Redis cannot be asked for the device's budget, or the broker for the
queue's depth, the request goes on (logged). The outbox then holds what the
broker cannot take, which is its purpose. Nor may they stall the request:
both are asked with the request path's short timeouts (EVENTBUS_REQUEST_TIMEOUT)
through their fail-fast gates (eventbus/protection/failfast.py), so that after one
failure the following requests do not ask for a few seconds.
"""

from __future__ import annotations

import logging
import math
import random

import redis
from celery import current_app
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from eventbus import TokenBucket, ops_api, parse_rate
from eventbus.doors import (
    BROKER_GATE,
    REDIS_GATE,
    Unavailable,
    count_on_request,
    queue_pressure,
    request_client,
    request_producer,
)
from project import queues
from telemetry import tokens
from telemetry.models import Device
from telemetry.schemas import MAX_BODY_BYTES

log = logging.getLogger(__name__)

THROTTLED = "telemetry_throttled"
"""Counter (``eventbus.doors.count_on_request``) of 429 answers, labelled ``<device name>|<reason>``."""
RATE = "rate"
PRESSURE = "pressure"

# Seconds a device is told to wait when the queue is full: about the time the
# depth read is cached (EVENTBUS_QUEUE_DEPTH_CACHE) and a pool needs to take a
# few hundred messages, spread so that refused devices do not come back together.
PRESSURE_RETRY_AFTER = (1, 3)

JSON_TYPES = ("application/json",)


class DoorRefusal(Exception):
    """A request refused before its body was read: the status and what to tell the device."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


def admit(request: HttpRequest) -> Device:
    """The calling device, once every check passed; raises DoorRefusal otherwise."""
    device = tokens.authenticate(request.headers.get("Authorization", ""))
    if device is None:
        raise DoorRefusal(401, "send the device's token as 'Authorization: Bearer <token>'")
    content_type = request.content_type or ""
    if content_type.lower() not in JSON_TYPES:
        raise DoorRefusal(415, f"send the body as application/json, not {content_type or 'no content type'}")
    declared = request.headers.get("Content-Length", "")
    too_big = DoorRefusal(413, f"the body is over {MAX_BODY_BYTES} bytes; send fewer readings per request")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_big
    try:
        size = len(request.body)
    except RequestDataTooBig:  # no Content-Length, and more than DATA_UPLOAD_MAX_MEMORY_SIZE sent
        raise too_big from None
    if size > MAX_BODY_BYTES:
        raise too_big
    _check_rate(device)
    _check_pressure(device)
    return device


def _check_rate(device: Device) -> None:
    rate = parse_rate(settings.TELEMETRY_DEVICE_RATE, setting="TELEMETRY_DEVICE_RATE")
    try:
        with REDIS_GATE.attempt():
            wait = TokenBucket(f"telemetry-device:{device.pk}", rate).try_acquire(connection=request_client())
    except Unavailable:
        return  # logged once, when Redis failed
    except redis.RedisError as exc:
        log.warning("telemetry: rate of device %s not checked (Redis: %s)", device.name, exc)
        return
    if wait > 0:
        count_on_request(THROTTLED, f"{device.name}|{RATE}")
        raise DoorRefusal(
            429, f"this device sends more than {settings.TELEMETRY_DEVICE_RATE} requests", max(1, math.ceil(wait))
        )


def _check_pressure(device: Device) -> None:
    app = current_app._get_current_object()
    try:
        with BROKER_GATE.attempt(), request_producer(app) as producer:
            pressure = queue_pressure(producer.channel, queues.TELEMETRY)
    except Unavailable:
        return  # logged once, when the broker failed
    except Exception as exc:  # the broker's errors are many and transport-specific
        log.warning("telemetry: depth of the %s queue not read (%s); accepting", queues.TELEMETRY, exc)
        return
    if pressure.above:
        count_on_request(THROTTLED, f"{device.name}|{PRESSURE}")
        raise DoorRefusal(
            429,
            f"ingestion is saturated ({pressure.describe()}); try again later",
            random.randint(*PRESSURE_RETRY_AFTER),
        )


def throttled_counts() -> dict[tuple[str, str], int]:
    """429 answers so far, by (device name, reason), for /metrics."""
    counts: dict[tuple[str, str], int] = {}
    for label, value in ops_api.read_counter(THROTTLED).items():
        name, _, reason = label.rpartition("|")
        counts[(name, reason)] = value
    return counts
