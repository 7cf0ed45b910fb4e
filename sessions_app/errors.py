"""Coded errors of sessions, tokens and client apps."""

from __future__ import annotations

from rest_framework import exceptions, status

from photobooth.errors import PhotoboothError


class NoSession(PhotoboothError, exceptions.NotAuthenticated):
    """The request carries neither a session cookie nor a bearer token."""

    status_code = status.HTTP_401_UNAUTHORIZED
    default_code = "no_session"
    default_detail = "Start a session first: POST /api/sessions."


class InvalidToken(PhotoboothError, exceptions.AuthenticationFailed):
    """The bearer token is unknown, revoked or expired."""

    status_code = status.HTTP_401_UNAUTHORIZED
    default_code = "invalid_token"
    default_detail = "The bearer token is unknown, revoked or expired."


class InvalidClientAppId(PhotoboothError):
    """The clientAppId does not match the contract's pattern."""

    default_code = "invalid_client_app_id"
    default_detail = (
        "clientAppId must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$ "
        "(e.g. photobooth-frontend-1732262205)."
    )


class ClientAppForbidden(PhotoboothError):
    """The clientAppId belongs to another session."""

    status_code = status.HTTP_403_FORBIDDEN
    default_code = "client_app_forbidden"
    default_detail = "This clientAppId belongs to another session."


class CsrfFailed(PhotoboothError):
    """A cookie-authenticated write came without a valid CSRF token."""

    status_code = status.HTTP_403_FORBIDDEN
    default_code = "csrf_failed"
    default_detail = "CSRF check failed: send the csrftoken cookie's value in X-CSRFToken."
