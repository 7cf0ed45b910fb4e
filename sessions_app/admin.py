"""Admin for sessions, tokens and client apps (inspection; revocation is an action)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from sessions_app.actions import do_revoke_session_tokens
from sessions_app.models import AccessToken, BoothSession, ClientApp


class ReadOnlyAdminMixin:
    """Show rows without add, change or delete: actions write them, never the admin's forms.

    Saving a form writes every column it loaded, so it could move a session's `event_seq` back
    under a concurrent publish_event; deleting cascades through tasks and the event log.
    jobs_app.admin uses this too.
    """

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class AccessTokenInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = AccessToken
    extra = 0
    fields = ("digest", "created_at", "expires_at", "revoked_at", "last_used_at")
    readonly_fields = fields


@admin.register(BoothSession)
class BoothSessionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "created_at", "event_seq")
    search_fields = ("id",)
    readonly_fields = ("id", "created_at", "event_seq", "pruned_seq", "cursor_prefix")
    inlines = [AccessTokenInline]
    actions = ["revoke_tokens"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        """Let staff who may change tokens revoke them; nobody edits them by hand."""
        return request.user.has_perm("sessions_app.change_accesstoken")

    @admin.action(
        permissions=["revoke"], description="Revoke every bearer token of the selected sessions"
    )
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[BoothSession]) -> None:
        count = do_revoke_session_tokens(queryset)
        self.message_user(request, f"Revoked {count} token(s).")


@admin.register(ClientApp)
class ClientAppAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("client_app_id", "session", "created_at")
    search_fields = ("client_app_id", "session__id")
    readonly_fields = ("client_app_id", "session", "created_at")
