from django.apps import AppConfig


class OpsConfig(AppConfig):
    """The operators' room: pages and commands that show and repair the event flow, behind the admin's permissions.

    It reads what the event bus and the apps record; it owns no business data.
    """

    name = "ops"
    verbose_name = "Operations"
