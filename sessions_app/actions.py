"""Actions on booth sessions, bearer tokens and client apps.

Views, consumers and the admin call these; they never write these models themselves.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from photobooth.db import durable_transaction
from sessions_app.errors import ClientAppForbidden, InvalidClientAppId, InvalidToken
from sessions_app.models import CLIENT_APP_ID_PATTERN, AccessToken, BoothSession, ClientApp

TOKEN_PREFIX = "pbt_"
_CLIENT_APP_ID_RE = re.compile(CLIENT_APP_ID_PATTERN)


@dataclass(frozen=True, slots=True, kw_only=True)
class StartedSession:
    session: BoothSession
    token: str  # shown once; only its digest is stored
    expires_at: datetime


@durable_transaction
def do_start_session() -> StartedSession:
    """Create a booth session with its first bearer token."""
    session = BoothSession.objects.create()
    token, access = _issue_token(session)
    return StartedSession(session=session, token=token, expires_at=access.expires_at)


def _issue_token(session: BoothSession) -> tuple[str, AccessToken]:
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    access = AccessToken.objects.create(
        session=session,
        digest=AccessToken.digest_of(raw),
        expires_at=timezone.now() + timedelta(seconds=settings.BOOTH_TOKEN_TTL_SECONDS),
    )
    return raw, access


def session_for_token(raw_token: str) -> BoothSession:
    """Return the session of a usable bearer token, or raise InvalidToken."""
    access = (
        AccessToken.objects.usable()
        .select_related("session")
        .filter(digest=AccessToken.digest_of(raw_token))
        .first()
    )
    if access is None:
        raise InvalidToken()
    now = timezone.now()
    # Coarse on purpose: one write per token per minute, not one per request.
    if access.last_used_at is None or now - access.last_used_at > timedelta(minutes=1):
        AccessToken.objects.filter(pk=access.pk).update(last_used_at=now)
    return access.session


def do_revoke_token(raw_token: str) -> bool:
    """Revoke a bearer token; return whether it was usable until now."""
    updated = AccessToken.objects.usable().filter(digest=AccessToken.digest_of(raw_token))
    return updated.update(revoked_at=timezone.now()) == 1


def do_revoke_session_tokens(sessions: Iterable[BoothSession]) -> int:
    """Revoke every usable bearer token of these sessions; return how many were revoked."""
    usable = AccessToken.objects.usable().filter(session__in=sessions)
    return usable.update(revoked_at=timezone.now())


def check_client_app_id(client_app_id: object) -> str:
    """Return the clientAppId if it has the contract's format, else raise InvalidClientAppId."""
    if not isinstance(client_app_id, str) or not _CLIENT_APP_ID_RE.fullmatch(client_app_id):
        raise InvalidClientAppId()
    return client_app_id


def find_client_app(session: BoothSession, client_app_id: str) -> ClientApp | None:
    """Return the session's client app, None when nobody uses the id, 403 when another does."""
    check_client_app_id(client_app_id)
    client_app = ClientApp.objects.filter(client_app_id=client_app_id).first()
    if client_app is not None and client_app.session_id != session.pk:
        raise ClientAppForbidden()
    return client_app


def do_claim_client_app(session: BoothSession, client_app_id: str) -> ClientApp:
    """Return the session's client app, claiming the id when nobody uses it yet."""
    if client_app := find_client_app(session, client_app_id):
        return client_app
    try:
        with transaction.atomic():
            return ClientApp.objects.create(client_app_id=client_app_id, session=session)
    except IntegrityError:
        # Another request claimed it between our read and our insert; it decides.
        client_app = find_client_app(session, client_app_id)
        assert client_app is not None
        return client_app
