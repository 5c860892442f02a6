"""Sign-up accounts in Django admin; verifying an address goes through the real service (and publishes)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from signups.events import aggregate_of
from signups.models import Account
from signups.services import verify_email
from signups.verification import InvalidToken, VerificationClaim


class VerifiedFilter(admin.SimpleListFilter):
    title = "email verified"
    parameter_name = "verified"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "verified"), ("no", "not verified")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Account]) -> QuerySet[Account]:
        if self.value() == "yes":
            return queryset.filter(email_verified_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(email_verified_at__isnull=True)
        return queryset


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    """Accounts are made by sign-up and verified by the link (or the action here), never edited by hand.

    Both write an event with the change; editing the row here would not, so
    every field is read-only and adding is off.
    """

    list_display = ("email", "signed_up_at", "verified", "email_verified_at", "events")
    list_filter = (VerifiedFilter, "signed_up_at")
    search_fields = ("user__email", "user__username")
    list_select_related = ("user",)
    date_hierarchy = "signed_up_at"
    ordering = ("-signed_up_at",)
    readonly_fields = ("user", "signed_up_at", "email_verified_at", "events")
    actions = ["verify_selected"]

    @admin.display(description="email", ordering="user__email")
    def email(self, obj: Account) -> str:
        return obj.user.email

    @admin.display(description="verified", boolean=True)
    def verified(self, obj: Account) -> bool:
        return obj.is_verified

    @admin.display(description="events")
    def events(self, obj: Account) -> str:
        url = f"{reverse('ops:events')}?{urlencode({'q': aggregate_of(obj.user_id)})}"
        return format_html('<a href="{}">{}</a>', url, "timeline")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Mark the email verified (publishes user.email_verified)", permissions=["change"])
    def verify_selected(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        verified = already = 0
        for account in queryset.select_related("user"):
            try:
                newly = verify_email(VerificationClaim(user_id=account.user_id, email=account.user.email))
            except InvalidToken as exc:
                self.message_user(request, f"{account.user.email}: {exc}", messages.WARNING)
                continue
            verified, already = verified + newly, already + (not newly)
        self.message_user(
            request,
            f"Verified {verified} account{'s' if verified != 1 else ''}; {already} already were.",
            messages.SUCCESS,
        )
