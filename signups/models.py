"""Sign-up state beside Django's auth User: whether the email address is verified."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Account(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account")
    email_verified_at = models.DateTimeField(null=True, blank=True)
    signed_up_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"account of {self.user}"

    @property
    def is_verified(self) -> bool:
        return self.email_verified_at is not None
