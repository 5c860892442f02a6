"""Numbers for the telemetry dashboard: per metric, the last hour in one-minute buckets; rate; lag."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Max, Min, Sum
from django.utils import timezone

from eventbus import latency
from telemetry.models import Reading, Rollup

SUBSCRIBER = "telemetry.rollup"
RATE_WINDOW = timedelta(seconds=60)


@dataclass(frozen=True)
class Minute:
    minute: datetime
    count: int
    minimum: float
    mean: float
    maximum: float


@dataclass(frozen=True)
class Lag:
    """Arrival (the event's occurred_at, the request's time) to rollup, from the bus's latency histogram."""

    count: int
    p50: float | None
    p99: float | None
    mean: float | None


def last_hour(now: datetime | None = None) -> dict[str, list[Minute]]:
    """Per metric, every minute of the last hour that has readings, summed over devices."""
    now = now or timezone.now()
    start = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    rows = (
        Rollup.objects.filter(minute__gte=start)
        .values("metric", "minute")
        .annotate(n=Sum("count"), total=Sum("total"), low=Min("minimum"), high=Max("maximum"))
        .order_by("metric", "minute")
    )
    series: dict[str, list[Minute]] = {}
    for row in rows:
        series.setdefault(row["metric"], []).append(
            Minute(row["minute"], row["n"], row["low"], row["total"] / row["n"] if row["n"] else 0.0, row["high"])
        )
    return series


def ingestion_rate(now: datetime | None = None) -> float:
    """Readings accepted per second over the last minute."""
    now = now or timezone.now()
    return Reading.objects.filter(received_at__gte=now - RATE_WINDOW).count() / RATE_WINDOW.total_seconds()


def rollup_lag() -> Lag:
    """p50 and p99 as the upper bound of the histogram bucket they fall in (the histogram keeps no more)."""
    h = latency.histogram(SUBSCRIBER)
    if not h.count:
        return Lag(0, None, None, None)

    def quantile(q: float) -> float:
        rank = math.ceil(q * h.count)
        return next(bound for bound, seen in h.cumulative if seen >= rank)

    return Lag(h.count, quantile(0.5), quantile(0.99), h.total / h.count)
