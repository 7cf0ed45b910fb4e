"""The one error format of every HTTP answer: `{"error": {"code", "message", "details"}}`.

DRF views reach it through `api_exception_handler`; plain Django views (async endpoints, 404,
500, CSRF failures) through `error_response`. Apps define their own coded errors by
subclassing `PhotoboothError`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class PhotoboothError(exceptions.APIException):
    """Base of the coded API errors; subclass it, do not raise it directly."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "bad_request"
    default_detail = "The request is not valid."

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None):
        super().__init__(message or self.default_detail, self.default_code)
        self.details = details


class NotFoundError(PhotoboothError):
    """The object does not exist, or is not the caller's to see."""

    status_code = status.HTTP_404_NOT_FOUND
    default_code = "not_found"
    default_detail = "Not found."


# DRF's own exceptions, named by the codes clients see.
_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ValidationError: "validation_error",
    exceptions.ParseError: "malformed_request",
    exceptions.NotAuthenticated: "no_session",
    exceptions.AuthenticationFailed: "invalid_token",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict:
    """Return the error envelope of the contract."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def _message_of(detail: Any) -> str:
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()), ("", ""))
        inner = _message_of(value)
        return inner if field in ("non_field_errors", "") else f"{field}: {inner}"
    if isinstance(detail, list):
        return _message_of(detail[0]) if detail else "Invalid input."
    return str(detail)


def describe(exc: exceptions.APIException) -> tuple[str, str, dict[str, Any] | None]:
    """Return the code, message and details of an API exception."""
    if isinstance(exc, PhotoboothError):
        return exc.default_code, str(exc.detail), exc.details
    code = next(
        (code for klass, code in _DRF_CODES.items() if isinstance(exc, klass)),
        exc.default_code if isinstance(exc.default_code, str) else "error",
    )
    details = None
    if isinstance(exc, exceptions.ValidationError):
        details = {"fields": exc.detail} if isinstance(exc.detail, dict) else {"errors": exc.detail}
    message = _message_of(exc.detail)
    return code, message, details


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Render every exception raised in a DRF view in the contract's format."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None  # Django's handler500 renders it (and it is logged there).
    code, message, details = describe(exc)
    headers = {}
    if auth_header := getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = auth_header
    if wait := getattr(exc, "wait", None):
        headers["Retry-After"] = str(math.ceil(wait))
    return Response(error_body(code, message, details), status=exc.status_code, headers=headers)


def error_response(exc: exceptions.APIException) -> JsonResponse:
    """Render an API exception from a plain Django view."""
    code, message, details = describe(exc)
    response = JsonResponse(error_body(code, message, details), status=exc.status_code)
    if wait := getattr(exc, "wait", None):
        response["Retry-After"] = str(math.ceil(wait))
    return response


# Machine endpoints always answer JSON; other paths are pages when a browser asks for HTML.
_MACHINE_PREFIXES = ("/api/", "/progress/", "/ws/", "/webhooks/", "/media/", "/mockup-api/",
                     "/static/", "/health", "/db-health", "/ws-health", "/metrics")  # fmt: skip


def _wants_html(request: HttpRequest) -> bool:
    if request.path.startswith("/admin/"):
        return True
    if request.path.startswith(_MACHINE_PREFIXES):
        return False
    return "text/html" in request.headers.get("Accept", "")


def handler404(request: HttpRequest, exception: Exception | None = None):
    """Answer unknown URLs: JSON in the contract's format, or a page for a browser."""
    if request.path.startswith("/admin/"):
        from django.views.defaults import page_not_found

        return page_not_found(request, exception)
    if _wants_html(request):
        from django.shortcuts import render

        return render(request, "pages/not_found.html", {"what": "page"}, status=404)
    return JsonResponse(error_body("not_found", "No such endpoint or object."), status=404)


def handler403(request: HttpRequest, exception: Exception | None = None):
    """Answer a refused request in the contract's format (the admin keeps its HTML page)."""
    if request.path.startswith("/admin/"):
        from django.views.defaults import permission_denied

        return permission_denied(request, exception)
    message = str(exception) if exception and str(exception) else "Forbidden."
    return JsonResponse(error_body("forbidden", message), status=403)


def handler500(request: HttpRequest):
    """Answer crashes without leaking internals."""
    return JsonResponse(
        error_body("internal_error", "Something went wrong on our side; it has been logged."),
        status=500,
    )


def csrf_failure(request: HttpRequest, reason: str = ""):
    """Answer a cookie-authenticated write that lacks a valid CSRF token."""
    message = "CSRF check failed: send the csrftoken cookie's value in X-CSRFToken."
    return JsonResponse(error_body("csrf_failed", message, {"reason": reason}), status=403)


def method_not_allowed(allowed: list[str]) -> JsonResponse:
    """Answer a plain Django view called with a method it does not take."""
    response = JsonResponse(
        error_body("method_not_allowed", f"Allowed methods: {', '.join(allowed)}."), status=405
    )
    response["Allow"] = ", ".join(allowed)
    return response
