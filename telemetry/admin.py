"""Devices in Django admin: adding one shows its token once; readings and rollups are read-only.

A new token is shown in the answer to the request that made it (a page of
its own, not cached), never through the messages framework: after a
redirect, Django keeps messages in a cookie that is signed, not encrypted,
so the token would cross the network and sit in the browser once more.
"""

from __future__ import annotations

import weakref
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import patch_cache_control

from eventbus.admin import ReadOnlyAdmin
from telemetry import tokens
from telemetry.models import Device, Reading, Rollup

# From save_model to response_add of the same request (the admin calls both;
# the ModelAdmin is shared by every request, so nothing goes on ``self``).
_new_tokens: weakref.WeakKeyDictionary[HttpRequest, str] = weakref.WeakKeyDictionary()


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
            _new_tokens[request] = token
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: Device, post_url_continue: str | None = None) -> HttpResponse:
        # Instead of the admin's redirect with a message: see the module's docstring.
        token = _new_tokens.pop(request)
        return self._tokens_page(request, f"Device {obj.name} added: its API token", [(obj, token)])

    @admin.action(description="Issue a new token (the old one stops working)")
    def rotate_tokens(self, request: HttpRequest, queryset: Any) -> HttpResponse:
        issued = [(device, tokens.rotate(device)) for device in queryset]
        return self._tokens_page(request, "New API tokens", issued)

    def _tokens_page(self, request: HttpRequest, title: str, issued: list[tuple[Device, str]]) -> HttpResponse:
        """The tokens, shown once in this answer; neither kept by a cache nor put in a cookie."""
        context = {**self.admin_site.each_context(request), "title": title, "opts": self.opts, "issued": issued}
        response = TemplateResponse(request, "admin/telemetry/device/tokens_shown_once.html", context)
        patch_cache_control(response, no_store=True, private=True)
        return response


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
