import logging

from django.apps import AppConfig

log = logging.getLogger("ops.metrics")


class OpsConfig(AppConfig):
    """The operators' room: pages and commands that show and repair the event flow, behind the admin's permissions.

    It reads what the event bus and the apps record; it owns no business data.
    """

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Said once at start, in every process's log, so that nobody has to guess who may scrape /metrics.
        from ops.metrics import access_mode

        log.info("%s", access_mode())
