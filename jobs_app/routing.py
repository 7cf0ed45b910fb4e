"""Channels routes of jobs_app: the WebSocket progress stream and the SSE streams.

SSE consumers read the session cookie themselves (SessionMiddlewareStack); the WebSocket
router gets it from photobooth/asgi.py.
"""

from channels.sessions import SessionMiddlewareStack
from django.urls import path, re_path

from jobs_app import consumers, sse

websocket_urlpatterns = [
    path("ws/progress/", consumers.ProgressConsumer.as_asgi()),
]

sse_urlpatterns = [
    path("progress/client", SessionMiddlewareStack(sse.ClientStreamConsumer.as_asgi())),
    path("progress/session", SessionMiddlewareStack(sse.SessionStreamConsumer.as_asgi())),
    re_path(
        r"^progress/(?P<task_id>[0-9a-fA-F-]{36})$",
        SessionMiddlewareStack(sse.TaskStreamConsumer.as_asgi()),
    ),
    path("api/sse/stream", SessionMiddlewareStack(sse.MultiplexStreamConsumer.as_asgi())),
]
