"""Devices in Django admin: adding one shows its token once; readings and rollups are read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from eventbus.admin import ReadOnlyAdmin
from telemetry import tokens
from telemetry.models import Device, Reading, Rollup


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("name", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("name",)
    fields = ("name", "active")
    actions = ["rotate_tokens"]

    def save_model(self, request: HttpRequest, obj: Device, form: Any, change: bool) -> None:
        if not change:
            token = tokens.new_token()
            obj.token_hash = tokens.hash_token(token)
            super().save_model(request, obj, form, change)
            # Shown once: only its hash is stored.
            messages.warning(request, f"API token of {obj.name} (shown once, copy it now): {token}")
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Issue a new token (the old one stops working)")
    def rotate_tokens(self, request: HttpRequest, queryset: Any) -> None:
        for device in queryset:
            messages.warning(request, f"new API token of {device.name} (shown once): {tokens.rotate(device)}")


@admin.register(Reading)
class ReadingAdmin(ReadOnlyAdmin):
    list_display = ("device", "seq", "metric", "value", "at", "received_at")
    list_filter = ("metric",)
    search_fields = ("device__name",)


@admin.register(Rollup)
class RollupAdmin(ReadOnlyAdmin):
    list_display = ("device", "metric", "minute", "count", "minimum", "mean", "maximum", "updated_at")
    list_filter = ("metric",)
    search_fields = ("device__name",)
