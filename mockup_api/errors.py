"""Coded errors of the built-in mockup API, in the upstream's `{"error": {"code", "message"}}`.

The stand-in plays a remote service, so it keeps its own small hierarchy instead of borrowing
Photobooth's API errors: its codes are the upstream's, not ours.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse


class MockupApiError(Exception):
    """Base of the stand-in's coded errors; subclass it, do not raise it directly."""

    status = 400
    code = "bad_request"
    default_message = "The request is not valid."

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.details = details


class InvalidRequest(MockupApiError):
    """The body or the query does not validate."""

    code = "invalid_request"
    default_message = "The request is not valid."


class Unauthorized(MockupApiError):
    """The bearer API key is missing or wrong."""

    status = 401
    code = "unauthorized"
    default_message = "Send 'Authorization: Bearer <api key>'."


class NotFound(MockupApiError):
    """No such object (or it expired)."""

    status = 404
    code = "not_found"
    default_message = "Not found."


class IdempotencyKeyReused(MockupApiError):
    """The Idempotency-Key was first used with another method, path or body."""

    status = 422
    code = "idempotency_key_reused"
    default_message = (
        "This Idempotency-Key was already used with a different request; "
        "send a new key for a new request."
    )


class RateLimited(MockupApiError):
    """The key's token bucket is empty."""

    status = 429
    code = "rate_limited"
    default_message = "Too many requests; retry after the Retry-After delay."

    def __init__(self, retry_after: int):
        super().__init__()
        self.retry_after = retry_after


def error_response(
    code: str, message: str, status: int, details: dict[str, Any] | None = None
) -> JsonResponse:
    """Return the upstream's error envelope."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return JsonResponse({"error": error}, status=status)


def render_error(exc: MockupApiError) -> JsonResponse:
    """Return the response of a coded error."""
    response = error_response(exc.code, exc.message, exc.status, exc.details)
    if isinstance(exc, RateLimited):
        response["Retry-After"] = str(exc.retry_after)
    return response


def method_not_allowed(allowed: list[str]) -> JsonResponse:
    """Answer a method the endpoint does not take."""
    response = error_response("method_not_allowed", f"Allowed methods: {', '.join(allowed)}.", 405)
    response["Allow"] = ", ".join(allowed)
    return response


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """Answer unknown paths of the standalone server."""
    return error_response("not_found", "No such endpoint.", 404)


def handler500(request: HttpRequest) -> JsonResponse:
    """Answer crashes of the standalone server without leaking internals."""
    return error_response("internal_error", "Something went wrong in the mockup API.", 500)
