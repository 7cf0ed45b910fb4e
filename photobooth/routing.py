"""Channels routes: SSE streams and WebSockets. Plain HTTP routes are in photobooth/urls.py."""

from __future__ import annotations

from django.conf import settings

from jobs_app.routing import sse_urlpatterns
from jobs_app.routing import websocket_urlpatterns as jobs_websockets
from mockup_api.routing import websocket_urlpatterns as mockup_api_websockets


def websocket_urlpatterns() -> list:
    """Return the WebSocket routes; the built-in mockup API only when no remote one is set."""
    routes: list = list(jobs_websockets)
    if settings.MOCKUP_API_URL is None:
        routes += mockup_api_websockets
    return routes


def stream_urlpatterns() -> list:
    """Return the HTTP routes served by Channels consumers (SSE) rather than Django views."""
    return list(sse_urlpatterns)
