from django.apps import AppConfig


class OpsConfig(AppConfig):
    """The operators' room: staff-only pages and commands that show and repair the event flow.

    It reads what the event bus and the apps record; it owns no business data.
    """

    name = "ops"
    verbose_name = "Operations"
