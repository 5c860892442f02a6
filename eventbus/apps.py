from __future__ import annotations

from types import ModuleType

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EventbusConfig(AppConfig):
    name = "eventbus"
    verbose_name = "Event bus"

    def __init__(self, app_name: str, app_module: ModuleType | None) -> None:
        super().__init__(app_name, app_module)
        # The defaults of the settings the host left out (eventbus/conf.py), in place
        # before any models module or ready() reads them; then settings that would
        # lose or duplicate messages stop the process, as early as a bad settings module.
        from eventbus.conf import install_defaults
        from eventbus.operations.checks import refuse_improper

        install_defaults()
        refuse_improper()

    def ready(self) -> None:
        # Event types first (producers' `events` modules), then the consumers'
        # `subscribers` modules, then check the two fit together: a subscriber
        # of an undeclared type, a type nobody consumes, or a version whose
        # chain of upcasters from version 1 has a gap stops the process.
        autodiscover_modules("events")
        autodiscover_modules("subscribers")
        from eventbus.contract import catalogue, registry

        catalogue.check()
        registry.check()

        from eventbus.operations.retention_tables import register_bus_tables

        register_bus_tables()

        from eventbus import signals

        signals.connect()

        from django.core import checks

        checks.register(_delivery_safety, "eventbus")


def _delivery_safety(app_configs: object = None, **_: object) -> list[object]:
    """``manage.py check``: the worker's start check, on the host's Celery app (the current one)."""
    from celery import current_app
    from django.core import checks

    from eventbus.operations.checks import problems

    return [checks.Error(problem, id="eventbus.E001") for problem in problems(current_app.conf)]
