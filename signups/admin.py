from django.contrib import admin

from signups.models import Account


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("user", "signed_up_at", "email_verified_at")
    list_filter = ("email_verified_at",)
    search_fields = ("user__email",)
    raw_id_fields = ("user",)
