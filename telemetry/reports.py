"""Numbers for the telemetry dashboard: per metric, the last hour in one-minute buckets; rate; lag."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Max, Min, Sum
from django.utils import timezone

from eventbus.models import OutboxEvent, ProcessedEvent
from telemetry.models import Reading, Rollup

SUBSCRIBER = "telemetry.rollup"
RATE_WINDOW = timedelta(seconds=60)
LAG_WINDOW = timedelta(minutes=5)
LAG_SAMPLES = 1000


@dataclass(frozen=True)
class Minute:
    minute: datetime
    count: int
    minimum: float
    mean: float
    maximum: float


@dataclass(frozen=True)
class Lag:
    """Seconds from a batch's arrival (its event's occurred_at, the request's time) to its rollup's commit."""

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


def rollup_lag(now: datetime | None = None) -> Lag:
    """Arrival to rollup over the batches rolled up in the last LAG_WINDOW (the latest LAG_SAMPLES of them).

    Exact, from the database: each batch's ledger row (``processed_at``, in
    the rollup's transaction) minus its event's ``occurred_at`` (the
    request's time). The bus's latency histogram has the same quantity since
    forever, in coarse buckets; a dashboard wants the recent value.
    """
    now = now or timezone.now()
    done = dict(
        ProcessedEvent.objects.filter(subscriber=SUBSCRIBER, processed_at__gte=now - LAG_WINDOW)
        .order_by("-processed_at")
        .values_list("event_id", "processed_at")[:LAG_SAMPLES]
    )
    arrived = OutboxEvent.objects.filter(id__in=list(done)).values_list("id", "occurred_at")
    lags = sorted((done[event_id] - at).total_seconds() for event_id, at in arrived)
    if not lags:
        return Lag(0, None, None, None)

    def quantile(q: float) -> float:
        return lags[min(len(lags) - 1, math.ceil(q * len(lags)) - 1)]

    return Lag(len(lags), quantile(0.5), quantile(0.99), sum(lags) / len(lags))
