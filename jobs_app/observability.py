"""`/api/sse/stats` (open streams of this process) and `/metrics` (Prometheus text format)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jobs_app.stream_registry import registry
from photobooth.errors import error_body, method_not_allowed
from sessions_app.authentication import bearer_token_of


def _may_see_stats(request: HttpRequest) -> bool:
    token = bearer_token_of(request)
    if token is not None:
        expected = settings.STATS_TOKEN
        return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())
    user = getattr(request, "user", None)
    return bool(user and user.is_active and user.is_staff)


def sse_stats_view(request: HttpRequest) -> JsonResponse:
    """Answer a staff session or `Authorization: Bearer <STATS_TOKEN>` with stream counts."""
    if request.method != "GET":
        return method_not_allowed(["GET"])
    if not _may_see_stats(request):
        message = "Stream statistics are for staff or the STATS_TOKEN."
        return JsonResponse(error_body("forbidden", message), status=403)
    return JsonResponse(registry.stats())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Return this process's counters in the Prometheus text format."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
