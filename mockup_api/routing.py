"""WebSocket routes of the built-in mockup API (the event socket)."""

from django.urls import re_path

from mockup_api.consumers import EventSocketConsumer

websocket_urlpatterns: list = [
    re_path(r"^mockup-api/v2/socket$", EventSocketConsumer.as_asgi()),
]
