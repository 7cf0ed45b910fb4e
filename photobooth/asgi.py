"""ASGI entry point: HTTP through Django (behind a body-size guard), WebSocket through Channels.

Two kinds of HTTP path skip Django: the SSE streams (Channels consumers) and the upstream's
webhooks, `jobs_app.webhook_endpoint` (a plain ASGI app that needs no session, CSRF or auth,
enforces its own 256 KiB limit while the body streams in, and must take 1,000 deliveries a
second per process: see that module).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "photobooth.settings")

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

# get_asgi_application() sets Django up before anything imports models. Static files (admin,
# API docs, pages) are served by Django's own async handler: no sync-only middleware in the
# chain, so async views never pass through a worker thread.
django_asgi_app = ASGIStaticFilesHandler(get_asgi_application())

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from jobs_app.server_loop import remember_running_loop  # noqa: E402
from jobs_app.upstream import check_deployment  # noqa: E402
from jobs_app.webhook_endpoint import endpoint as webhook_endpoint  # noqa: E402
from photobooth.request_threads import RequestThreads  # noqa: E402
from photobooth.routing import stream_urlpatterns, websocket_urlpatterns  # noqa: E402
from photobooth.twisted_forms import skip_form_parsing  # noqa: E402


class BodySizeLimit:
    """Answer 413 before Django spools a request body larger than REQUEST_BODY_MAX_BYTES.

    Django's ASGI handler reads the whole body before any view runs, so the upload limit must
    also be enforced here, while the bytes stream in.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.REQUEST_BODY_MAX_BYTES
        declared = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(send)
        received = 0
        refused = False

        async def limited_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        response_started = False

        async def tracking_send(message):
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
        if refused and not response_started:
            await self._refuse(send)

    @staticmethod
    async def _refuse(send) -> None:
        body = json.dumps(
            {"error": {"code": "file_too_large", "message": "The request body is too large."}}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class RememberServerLoop:
    """Record the serving event loop: sync code in worker threads announces events on it.

    The web side does no background work; workers do (`manage.py worker`, or `serve`).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        remember_running_loop()
        return await self.app(scope, receive, send)


check_deployment()
# Daphne's Twisted requests parsed every POST body as a form, for nothing (that module says why).
skip_form_parsing()


django_app = RequestThreads(BodySizeLimit(django_asgi_app))
application = ProtocolTypeRouter(
    {
        # SSE streams are Channels consumers (they need the channel layer), webhooks a lean app
        # of their own; the rest is Django.
        "http": URLRouter(
            [
                path("webhooks/mockup-api", webhook_endpoint),
                *stream_urlpatterns(),
                re_path(r"", django_app),
            ]
        ),
        # No session middleware: the streams read the session cookie when they open
        # (jobs_app/stream_access.py), and the mockup API's socket needs none.
        "websocket": URLRouter(websocket_urlpatterns()),
    }
)
application = RememberServerLoop(application)
