from django.db import models


class Greeting(models.Model):
    """The subscriber's effect: one row per greeting event, and whether the host's modules were loaded."""

    event_id = models.UUIDField()
    name = models.CharField(max_length=100)
    host_modules = models.TextField()

    def __str__(self) -> str:
        return self.name
