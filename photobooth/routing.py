"""WebSocket routes. HTTP routes are in photobooth/urls.py."""

from __future__ import annotations

from django.conf import settings

from mockup_api.routing import websocket_urlpatterns as mockup_api_websockets


def websocket_urlpatterns() -> list:
    """Return the WebSocket routes; the built-in mockup API only when no remote one is set."""
    routes: list = []
    if settings.MOCKUP_API_URL is None:
        routes += mockup_api_websockets
    return routes
