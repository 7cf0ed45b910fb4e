"""`/api/sse/stats` (open streams of the deployment) and `/metrics` (this process, Prometheus)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from jobs_app.metrics import ProcessLabelled, process_name
from jobs_app.stream_registry import StatsUnavailable, get_registry
from photobooth.errors import error_body, method_not_allowed
from sessions_app.authentication import bearer_token_of


async def _may_see_stats(request: HttpRequest) -> bool:
    token = bearer_token_of(request)
    if token is not None:
        expected = settings.STATS_TOKEN
        return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())
    user = await request.auser()
    return bool(user and user.is_active and user.is_staff)


async def sse_stats_view(request: HttpRequest) -> JsonResponse:
    """Answer a staff session or `Authorization: Bearer <STATS_TOKEN>` with stream counts.

    Async: with REDIS_URL the counts come from Redis, through the registry's async client.
    """
    if request.method != "GET":
        return method_not_allowed(["GET"])
    if not await _may_see_stats(request):
        message = "Stream statistics are for staff or the STATS_TOKEN."
        return JsonResponse(error_body("forbidden", message), status=403)
    try:
        stats = await get_registry().stats()
    except StatsUnavailable as exc:
        # Per-process figures would pass for the deployment's: say they are missing instead.
        return JsonResponse(error_body(exc.default_code, str(exc.detail)), status=503)
    return JsonResponse(stats)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Return this process's metrics in the Prometheus text format, labelled with `process`."""
    body = generate_latest(ProcessLabelled(REGISTRY, process_name()))
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
