"""The API's request and response shapes (pydantic, so the OpenAPI description comes from the same code).

Validation is strict where JSON is loose: ``true`` is not a number, ``"12"``
is not a seq, a time must say its UTC offset, NaN and infinities are refused,
and so is a value beyond MAX_ABS_VALUE.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Annotated, Any

from django.conf import settings
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_READINGS = 500
"""Readings per request: a batch a device can resend whole, and one event small enough for the broker."""
MAX_BODY_BYTES = 1024 * 1024
"""Request bodies above 1 MiB are refused with 413 before they are parsed."""
MAX_FUTURE = timedelta(minutes=5)
"""A reading may be this far ahead of the server's clock (device clocks drift); further is a wrong clock."""
MAX_ABS_VALUE = 1e15
"""The largest magnitude of a reading. Every integer up to it is exact in a float64 (2**53 is 9.007e15),
and a minute's sum stays finite in float64 and in PostgreSQL's double precision (both end at 1.8e308)
however many readings it holds: a bucket would need 1e293 of them. Part of the API's contract (its
OpenAPI description), like MAX_READINGS: the rollups' arithmetic relies on it (telemetry/rollup.py)."""
BOUND = f"{MAX_ABS_VALUE:.0e}".replace("e+", "e")
"""MAX_ABS_VALUE as people write it: 1e15."""
METRIC_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$"
SEQ_MAX = 2**63 - 1


class ReadingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: Annotated[int, Field(strict=True, ge=0, le=SEQ_MAX, description="Per device, increasing; the dedup key.")]
    at: Annotated[datetime, Field(description="When the reading was taken: ISO 8601 with a UTC offset.")]
    metric: Annotated[
        str, Field(pattern=METRIC_PATTERN, description="A name: letters, digits, _ . : - ; at most 64 characters.")
    ]
    value: Annotated[
        float,
        Field(
            strict=True,
            allow_inf_nan=False,
            ge=-MAX_ABS_VALUE,
            le=MAX_ABS_VALUE,
            description=f"A finite number between -{BOUND} and {BOUND}, so that sums of readings stay finite.",
        ),
    ]

    @field_validator("at", mode="before")
    @classmethod
    def _at_is_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be an ISO 8601 time as a string, e.g. 2026-01-31T12:00:00Z")
        return value

    @field_validator("at")
    @classmethod
    def _at_is_plausible(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("needs a UTC offset, e.g. 2026-01-31T12:00:00Z or +01:00")
        now = timezone.now()
        if value > now + MAX_FUTURE:
            raise ValueError(
                f"is more than {int(MAX_FUTURE.total_seconds() // 60)} minutes ahead of the server's clock"
            )
        if value < now - timedelta(days=settings.TELEMETRY_RETENTION_DAYS):
            raise ValueError(f"is older than the retention period ({settings.TELEMETRY_RETENTION_DAYS} days)")
        return value

    @field_validator("value", mode="before")
    @classmethod
    def _value_is_finite(cls, value: Any) -> Any:
        # Python's json module reads NaN and Infinity, which JSON does not have.
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        # Checked here too (not only by le/ge) to name the bound in the answer, and
        # before an integer of 400 digits meets float().
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_ABS_VALUE:
            raise ValueError(f"must be between -{BOUND} and {BOUND}")
        return value


class ReadingBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    readings: Annotated[list[ReadingIn], Field(min_length=1, max_length=MAX_READINGS)]


class Accepted(BaseModel):
    accepted: int = Field(description="Readings recorded by this request.")
    duplicates: int = Field(description="Readings whose (device, seq) was already recorded: not recorded again.")


class ItemError(BaseModel):
    index: int | None = Field(description="Position of the reading in `readings`; null for the body as a whole.")
    field: str = Field(description="The field to change.")
    message: str


class Invalid(BaseModel):
    detail: str
    errors: list[ItemError]


class Refused(BaseModel):
    detail: str


class Throttled(BaseModel):
    detail: str
    retry_after: int = Field(description="Seconds to wait before sending again (also the Retry-After header).")
