"""Numbers for the dashboard, computed from the analytics records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from analytics.models import AnalyticsEvent

SIGNED_UP = "user.signed_up"
VERIFIED = "user.email_verified"


@dataclass(frozen=True)
class DailyCount:
    day: date
    signups: int
    verifications: int


@dataclass(frozen=True)
class Funnel:
    signed_up: int
    verified: int

    @property
    def rate(self) -> float:
        return self.verified / self.signed_up if self.signed_up else 0.0


def daily_counts(days: int = 14) -> list[DailyCount]:
    today = timezone.now().date()
    start = today - timedelta(days=days - 1)
    rows = (
        AnalyticsEvent.objects.filter(occurred_at__date__gte=start, type__in=[SIGNED_UP, VERIFIED])
        .annotate(day=TruncDate("occurred_at"))
        .values("day", "type")
        .annotate(n=Count("id"))
    )
    counts: dict[tuple[date, str], int] = {(r["day"], r["type"]): r["n"] for r in rows}
    return [
        DailyCount(day=d, signups=counts.get((d, SIGNED_UP), 0), verifications=counts.get((d, VERIFIED), 0))
        for d in (start + timedelta(days=i) for i in range(days))
    ]


def funnel() -> Funnel:
    signed_up = set(AnalyticsEvent.objects.filter(type=SIGNED_UP).values_list("user_id", flat=True))
    verified = set(AnalyticsEvent.objects.filter(type=VERIFIED).values_list("user_id", flat=True))
    # A verification counts in the funnel only once its sign-up was recorded.
    return Funnel(signed_up=len(signed_up), verified=len(verified & signed_up))
