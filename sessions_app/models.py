"""Booth sessions (the ownership boundary), their bearer tokens and the client apps they own."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from django.db import models
from django.utils import timezone

CLIENT_APP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"


def _cursor_prefix() -> str:
    return secrets.token_hex(4)


class BoothSession(models.Model):
    """An anonymous booth session: owns client apps, uploads, tasks and an event log."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    # Cursor of the newest event in this session's log. Only jobs_app.events.publish_event
    # moves it, under a row lock, so sequence numbers commit in order (see docs/events.md).
    event_seq = models.BigIntegerField(default=0)
    # Events up to this cursor have been pruned (retention); older cursors get a reset.
    pruned_seq = models.BigIntegerField(default=0)
    # Makes this session's cursors unusable in any other session (they count as unknown).
    cursor_prefix = models.CharField(max_length=16, default=_cursor_prefix, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return str(self.id)


class AccessTokenQuerySet(models.QuerySet["AccessToken"]):
    def usable(self) -> AccessTokenQuerySet:
        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())


class AccessToken(models.Model):
    """A bearer token for one booth session; only its SHA-256 digest is stored."""

    session = models.ForeignKey(BoothSession, on_delete=models.CASCADE, related_name="tokens")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = AccessTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"token {self.digest[:8]}… of {self.session_id}"

    @staticmethod
    def digest_of(raw_token: str) -> str:
        return hashlib.sha256(raw_token.encode()).hexdigest()

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class ClientApp(models.Model):
    """One client program (booth page, extension, kiosk), owned by the first session using it."""

    client_app_id = models.CharField(max_length=80, unique=True)
    session = models.ForeignKey(BoothSession, on_delete=models.CASCADE, related_name="client_apps")
    created_at = models.DateTimeField(default=timezone.now)
    # Sequence number of this client's newest event (written by publish_event): live streams
    # compare it with the previous pointer a message carries to see a lost message.
    last_event_seq = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "client app"

    def __str__(self) -> str:
        return self.client_app_id
