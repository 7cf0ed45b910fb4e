"""`manage.py serve`: daphne with the task queue and upstream socket started at once.

Plain `daphne photobooth.asgi:application` works too; it starts the background work on the
first request. This command starts it when the server starts, so queued and running tasks
carry on right after a restart even before anyone connects.
"""

from __future__ import annotations

import asyncio
import logging

from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server, twisted_loop
from django.core.management.base import BaseCommand

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve the ASGI application with daphne and start the task queue immediately."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host: str, port: int, **options) -> None:
        from jobs_app.server_loop import remember_running_loop
        from jobs_app.worker import background
        from photobooth.asgi import application

        def start() -> None:
            try:
                remember_running_loop()
                background.ensure_started()
            except Exception:
                logger.exception("background_work_start_failed")

        def when_ready() -> None:
            # Called before the reactor runs: queue the start on daphne's asyncio loop, where
            # it runs once the loop does; on shutdown, let submissions in flight finish.
            from twisted.internet import defer, reactor

            twisted_loop.call_soon(start)
            reactor.addSystemEventTrigger(
                "before",
                "shutdown",
                lambda: defer.Deferred.fromFuture(asyncio.ensure_future(background.stop())),
            )

        self.stdout.write(f"Serving on http://{host}:{port}/ (Ctrl+C to stop)")
        Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            ready_callable=when_ready,
            action_logger=None,
        ).run()
