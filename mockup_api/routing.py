"""WebSocket routes of the built-in mockup API (the event socket)."""

websocket_urlpatterns: list = []
