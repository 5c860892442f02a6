"""The telemetry dashboard: the last hour per metric, the ingestion rate, the arrival-to-rollup lag."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from telemetry.chart import range_chart
from telemetry.reports import ingestion_rate, last_hour, rollup_lag


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    series = last_hour(now)
    lag = rollup_lag(now)
    metrics = [
        {
            "name": name,
            "minutes": minutes,
            "chart": range_chart(minutes, now),
            "count": sum(m.count for m in minutes),
            "latest": minutes[-1],
        }
        for name, minutes in series.items()
    ]
    return render(
        request,
        "telemetry/dashboard.html",
        {"metrics": metrics, "rate": ingestion_rate(now), "lag": lag, "now": now},
    )
