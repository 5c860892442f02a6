from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"

    def ready(self) -> None:
        # The bus purges the analytics records (eventbus/operations/retention.py);
        # it imports no app, so the app names them.
        from analytics.models import AnalyticsEvent
        from eventbus import Retention, register_retention

        register_retention(
            Retention(
                "analytics.events",
                AnalyticsEvent,
                "occurred_at",
                "ANALYTICS_RETENTION_DAYS",
                "by the event's time; the page charts 14 days, a year allows a year-over-year comparison",
            )
        )
