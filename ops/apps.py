from django.apps import AppConfig


class OpsConfig(AppConfig):
    """The operators' room: pages and commands that show and repair the event flow, behind the admin's permissions.

    It reads what the event bus and the apps record; it owns no business data.
    """

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Staff log in to the admin and these pages: Django keeps each session as a row
        # (the database session engine) and deletes none by itself (`clearsessions` is left
        # to a cron). The bus's retention purges them, bounded, as it does every table that grows.
        from datetime import timedelta

        from django.contrib.sessions.models import Session

        from eventbus import Retention, register_retention

        register_retention(
            Retention(
                "django.sessions",
                Session,
                "expire_date",
                "SESSION_COOKIE_AGE",
                "by the session's expiry: gone once it has been expired for as long again as a session lives "
                "(Django's SESSION_COOKIE_AGE, two weeks); a session past its expiry opens nothing",
                unit=timedelta(seconds=1),
            )
        )
