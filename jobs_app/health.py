"""Liveness of the app, the channel layer and the database (for load balancers and on-call)."""

from __future__ import annotations

import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse

from photobooth.errors import error_body

logger = logging.getLogger(__name__)
CHECK_TIMEOUT_SECONDS = 3


def _ok(**fields) -> JsonResponse:
    return JsonResponse({"status": "ok", **fields})


def _unavailable(code: str, message: str, **fields) -> JsonResponse:
    return JsonResponse(
        {"status": "unavailable", **fields, **error_body(code, message)}, status=503
    )


async def health_view(request: HttpRequest) -> JsonResponse:
    """Answer as long as the process serves requests (with its worker's state, if it has one)."""
    from jobs_app.worker import background

    return _ok(service="photobooth", **background.status())


@sync_to_async
def _ping_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


async def db_health_view(request: HttpRequest) -> JsonResponse:
    """Run a trivial query against the database."""
    started = time.perf_counter()
    try:
        vendor = await asyncio.wait_for(_ping_database(), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        logger.warning("db_health_failed error=%r", exc)
        return _unavailable("database_unavailable", "The database does not answer.")
    return _ok(database=vendor, latencyMs=round((time.perf_counter() - started) * 1000, 2))


async def ws_health_view(request: HttpRequest) -> JsonResponse:
    """Send a message through the channel layer and receive it back."""
    layer = get_channel_layer()
    started = time.perf_counter()
    try:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "health.ping"})
        message = await asyncio.wait_for(layer.receive(channel), CHECK_TIMEOUT_SECONDS)
        if message.get("type") != "health.ping":
            raise RuntimeError(f"unexpected message {message!r}")
    except Exception as exc:
        logger.warning("ws_health_failed error=%r", exc)
        return _unavailable("channel_layer_unavailable", "The channel layer does not answer.")
    return _ok(
        channelLayer=type(layer).__name__,
        latencyMs=round((time.perf_counter() - started) * 1000, 2),
    )
