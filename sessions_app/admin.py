"""Admin for sessions, tokens and client apps (inspection; revocation is an action)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from sessions_app.models import AccessToken, BoothSession, ClientApp


class AccessTokenInline(admin.TabularInline):
    model = AccessToken
    extra = 0
    fields = ("digest", "created_at", "expires_at", "revoked_at", "last_used_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(BoothSession)
class BoothSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "event_seq")
    search_fields = ("id",)
    readonly_fields = ("id", "created_at", "event_seq", "pruned_seq", "cursor_prefix")
    inlines = [AccessTokenInline]
    actions = ["revoke_tokens"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke every bearer token of the selected sessions")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[BoothSession]) -> None:
        revoked = AccessToken.objects.usable().filter(session__in=queryset)
        count = revoked.update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).")


@admin.register(ClientApp)
class ClientAppAdmin(admin.ModelAdmin):
    list_display = ("client_app_id", "session", "created_at")
    search_fields = ("client_app_id", "session__id")
    readonly_fields = ("client_app_id", "session", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
