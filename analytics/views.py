"""The analytics dashboard: aggregate counts only, no personal data."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from analytics.chart import daily_chart
from analytics.reports import daily_counts, funnel


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    counts = daily_counts()
    return render(
        request,
        "analytics/dashboard.html",
        {
            "counts": counts,
            "chart": daily_chart(counts),
            "funnel": funnel(),
            "total_signups": sum(c.signups for c in counts),
            "total_verifications": sum(c.verifications for c in counts),
        },
    )
