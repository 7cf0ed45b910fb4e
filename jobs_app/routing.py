"""Channels routes of jobs_app: the WebSocket progress stream and the SSE streams.

No SessionMiddlewareStack: the streams read the session cookie themselves, once, when they
open (stream_access.resolve_caller); the middleware would keep scope copies and a lazy
session alive for every open stream.
"""

from django.urls import path, re_path

from jobs_app import consumers, sse

websocket_urlpatterns = [
    path("ws/progress/", consumers.ProgressConsumer.as_asgi()),
]

sse_urlpatterns = [
    path("progress/client", sse.ClientStreamConsumer.as_asgi()),
    path("progress/session", sse.SessionStreamConsumer.as_asgi()),
    re_path(r"^progress/(?P<task_id>[0-9a-fA-F-]{36})$", sse.TaskStreamConsumer.as_asgi()),
    path("api/sse/stream", sse.MultiplexStreamConsumer.as_asgi()),
]
