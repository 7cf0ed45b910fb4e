"""The standalone ASGI app of the mockup API: the same /mockup-api/... paths, HTTP and WebSocket.

`manage.py run_mockup_api` serves it on its own port, so the upstream can run as a separate
process, as a real remote service would.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "photobooth.settings")

import django

django.setup(set_prefix=False)  # before anything imports models or consumers

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, ASGIRequest  # noqa: E402

from mockup_api.routing import websocket_urlpatterns  # noqa: E402

URLCONF = "mockup_api.site_urls"


class StandaloneHandler(ASGIHandler):
    """Django's ASGI handler, resolving every request against the API-only URLconf."""

    def create_request(self, scope, body_file) -> tuple[ASGIRequest | None, object]:
        request, error = super().create_request(scope, body_file)
        if request is not None:
            # Per request rather than ROOT_URLCONF: the project's settings stay untouched.
            request.urlconf = URLCONF
        return request, error


application = ProtocolTypeRouter(
    {
        "http": StandaloneHandler(),
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
