"""`manage.py serve`: daphne serving the web, with a worker in the same process by default.

`serve` is the embedded default (what `make run` runs): the web and the background work in one
process, the worker started with the server so queued and running tasks carry on right after a
restart. `serve --no-worker` serves the web only, like plain `daphne photobooth.asgi:application`;
run the background work then with `manage.py worker`.
"""

from __future__ import annotations

import asyncio
import logging

from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server, twisted_loop
from django.core.management.base import BaseCommand

logger = logging.getLogger(__name__)


LISTEN_BACKLOG = 1024  # pending connections the kernel queues (Procfile and systemd: the same)


class Command(BaseCommand):
    help = "Serve the ASGI application with daphne; also run a worker unless --no-worker."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="Serve the web only; the background work runs in `manage.py worker`.",
        )

    def handle(self, *args, host: str, port: int, no_worker: bool, **options) -> None:
        from jobs_app.server_loop import remember_running_loop
        from jobs_app.worker import background
        from photobooth.asgi import application

        def start() -> None:
            remember_running_loop()
            if no_worker:
                return
            try:
                background.start()
            except Exception:
                logger.exception("worker_start_failed")

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

        role = "web only" if no_worker else "web and worker"
        self.stdout.write(f"Serving on http://{host}:{port}/ ({role}; Ctrl+C to stop)")
        Server(
            application=application,
            endpoints=[
                # Twisted's default listen backlog is 50: a booth's worth of streams opening
                # at once (a venue's Wi-Fi coming back) overflowed it and handshakes failed.
                f"{endpoint}:backlog={LISTEN_BACKLOG}"
                for endpoint in build_endpoint_description_strings(host=host, port=port)
            ],
            ready_callable=when_ready,
            action_logger=None,
        ).run()
