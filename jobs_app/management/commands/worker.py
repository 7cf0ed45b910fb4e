"""`manage.py worker`: the background work alone, no web server.

Dispatching, the upstream socket, applying upstream reports (socket, webhooks, reconciliation)
and, in whichever worker holds the leader lease, the deployment's singleton duties. Run any
number of them beside web processes; they need REDIS_URL, which carries their events to the
web processes' streams and the web processes' doorbell rings to them.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the background work (task queue, upstream socket, webhooks, leader duties)."

    def handle(self, *args, **options) -> None:
        from jobs_app.upstream import check_deployment

        if not settings.REDIS_URL:
            raise CommandError(
                "manage.py worker needs REDIS_URL: without it, the events it publishes cannot "
                "reach the web processes' streams. On one machine without Redis, run "
                "`manage.py serve` (web and worker in one process) instead."
            )
        check_deployment()
        self.stdout.write("Worker running (Ctrl+C to stop)")
        asyncio.run(self._run())

    async def _run(self) -> None:
        from jobs_app.server_loop import remember_running_loop
        from jobs_app.worker import background

        remember_running_loop()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        background.start()
        await stop.wait()
        logger.info("worker_stopping")
        await background.stop()
