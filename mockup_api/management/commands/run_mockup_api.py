"""`manage.py run_mockup_api`: serve the built-in mockup API alone, on its own port."""

from __future__ import annotations

import asyncio
import logging

from django.core.management.base import BaseCommand, CommandParser

logger = logging.getLogger(__name__)


def pass_close_reasons() -> None:
    """Make daphne put the ASGI close reason into the close frame, as the ASGI spec allows.

    Daphne 4.2 sends only the code (django/daphne#374), so clients would never see
    "Switching to new connection from app-id" with their 4015. Only this process is patched.
    """
    from daphne.ws_protocol import WebSocketProtocol

    original = WebSocketProtocol.handle_reply
    if getattr(original, "passes_close_reasons", False):
        return

    def handle_reply(self: WebSocketProtocol, message: dict) -> None:
        reason = message.get("reason")
        if (
            message.get("type") == "websocket.close"
            and reason
            and self.state != self.STATE_CONNECTING
        ):
            self.sendClose(code=message.get("code") or 1000, reason=reason)
            return
        original(self, message)

    handle_reply.passes_close_reasons = True  # type: ignore[attr-defined]
    WebSocketProtocol.handle_reply = handle_reply


class Command(BaseCommand):
    help = "Serve the built-in mockup API (HTTP and its event socket) on its own port."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Interface to bind.")
        parser.add_argument("--port", type=int, default=8100, help="TCP port to bind.")

    def handle(self, *args: object, host: str, port: int, **options: object) -> None:
        # Imported here: daphne.server installs Twisted's asyncio reactor on import.
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server
        from twisted.internet import defer, reactor

        from mockup_api.asgi import application
        from mockup_api.runner import runner

        def stop_background_work() -> defer.Deferred:
            # Twisted waits for the Deferred, so renders and webhooks end before the loop does,
            # and the render pool's workers have exited before the process does.
            loop = asyncio.get_running_loop()
            return defer.Deferred.fromFuture(loop.create_task(runner.shutdown(close_pool=True)))

        reactor.addSystemEventTrigger("before", "shutdown", stop_background_work)
        pass_close_reasons()
        self.stdout.write(f"Mockup API on http://{host}:{port}/mockup-api/")
        Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            signal_handlers=True,
            verbosity=int(options.get("verbosity", 1)),  # type: ignore[arg-type]
        ).run()
        logger.info("mockup_api stopped host=%s port=%s", host, port)
