"""Run each request's sync code on a thread kept from an earlier request, not a new one.

Django's ASGI handler gives every request a thread-sensitive context of its own, so its sync
middleware and views run on one thread, and asgiref starts a fresh thread for each context
and joins it afterwards. Under a busy booth that was a thread start and join per request, each
waiting for the GIL. Here the outermost context brings an executor from a small free list
(asgiref's `ThreadSensitiveContext(executor=...)`; Django's own context inside it then does
nothing), so the same few threads serve request after request.

An executor goes back on the list only once its thread is idle: a request cancelled while its
view still runs (the client went away) must not make the next request wait behind it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext

# Threads kept for reuse; a burst beyond it gets threads of its own, as before, that end after.
KEEP_IDLE = 32


class RequestThreads:
    """ASGI middleware: the wrapped (Django) app's sync code runs on reused threads."""

    def __init__(self, app, keep_idle: int = KEEP_IDLE):
        self.app = app
        self.keep_idle = keep_idle
        self.idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        executor = self.idle.pop() if self.idle else self._new_executor()
        try:
            async with ThreadSensitiveContext(executor=executor):
                return await self.app(scope, receive, send)
        finally:
            self._release_when_idle(executor, asyncio.get_running_loop())

    @staticmethod
    def _new_executor() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")

    def _release_when_idle(
        self, executor: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop
    ) -> None:
        # The marker runs once everything submitted before it has finished.
        def back(_: Future) -> None:
            try:
                loop.call_soon_threadsafe(self._keep_or_close, executor)
            except RuntimeError:  # the loop closed: the server is stopping
                executor.shutdown(wait=False)

        executor.submit(int).add_done_callback(back)

    def _keep_or_close(self, executor: ThreadPoolExecutor) -> None:
        if len(self.idle) < self.keep_idle:
            self.idle.append(executor)
        else:
            executor.shutdown(wait=False)
