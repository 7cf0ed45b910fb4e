"""Who is calling: a bearer token (judged alone) or the browser's session cookie (with CSRF).

The resolving functions are plain so that async views and consumers share them with DRF.
"""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from sessions_app.actions import session_for_token
from sessions_app.errors import CsrfFailed, InvalidToken, NoSession
from sessions_app.models import BoothSession

SESSION_COOKIE_KEY = "booth_session_id"


def bearer_token_of(headers: dict[str, str] | HttpRequest) -> str | None:
    """Return the bearer token of a request (or of ASGI-style headers), None when absent."""
    if isinstance(headers, HttpRequest):
        value = headers.headers.get("Authorization", "")
    else:
        value = headers.get("authorization", "")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token or " " in token:
        raise InvalidToken("The Authorization header must be 'Bearer <token>'.")
    return token


def session_from_cookie(django_session) -> BoothSession | None:
    """Return the booth session remembered in a Django session, if it still exists."""
    session_id = django_session.get(SESSION_COOKIE_KEY)
    if not session_id:
        return None
    return BoothSession.objects.filter(pk=session_id).first()


def remember_in_cookie(request: HttpRequest, session: BoothSession) -> None:
    """Make the browser's session cookie carry this booth session."""
    request.session[SESSION_COOKIE_KEY] = str(session.pk)


def resolve_session(request: HttpRequest) -> BoothSession | None:
    """Return the caller's booth session: bearer token first, then the cookie."""
    token = bearer_token_of(request)
    if token is not None:
        return session_for_token(token)
    return session_from_cookie(request.session)


class BearerTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <token>`: the token alone decides (cookies ignored, no CSRF)."""

    def authenticate(self, request: Request):
        token = bearer_token_of(request._request)
        if token is None:
            return None
        return (None, session_for_token(token))

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="photobooth"'


class BoothCookieAuthentication(SessionAuthentication):
    """The browser's session cookie; unsafe methods need the CSRF token."""

    def authenticate(self, request: Request):
        if bearer_token_of(request._request) is not None:
            return None
        session = session_from_cookie(request._request.session)
        if session is None:
            return None
        self.enforce_csrf(request)
        return (request._request.user, session)

    def enforce_csrf(self, request: Request) -> None:
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied as exc:
            raise CsrfFailed(details={"reason": str(exc.detail)}) from None


class HasBoothSession(BasePermission):
    """Let through only requests that carry a booth session."""

    def has_permission(self, request: Request, view) -> bool:
        if not isinstance(request.auth, BoothSession):
            raise NoSession()
        return True


def booth_session_of(request: Request) -> BoothSession:
    """Return the booth session DRF authenticated for this request."""
    if not isinstance(request.auth, BoothSession):
        raise NoSession()
    return request.auth
