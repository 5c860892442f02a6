from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EventbusConfig(AppConfig):
    name = "eventbus"
    verbose_name = "Event bus"

    def ready(self) -> None:
        # Event types first (producers' `events` modules), then the consumers'
        # `subscribers` modules, then check the two fit together: a subscriber
        # of an undeclared type, or a type nobody consumes, stops the process.
        autodiscover_modules("events")
        autodiscover_modules("subscribers")
        from eventbus import registry

        registry.check()
