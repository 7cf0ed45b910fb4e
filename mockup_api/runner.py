"""Lifetime of the stand-in's background work: asyncio tasks on the server's loop, one render pool.

Views and consumers start work with `runner.spawn()`, which keeps a strong reference until the
task ends (the loop itself only keeps weak ones). Pillow work goes through `runner.in_pool()`,
a ThreadPoolExecutor of MOCKUP_API_WORKERS threads, so the event loop never renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

from mockup_api.http import close_shared_client

logger = logging.getLogger(__name__)


class Runner:
    """Own the background tasks and the render pool of this process."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task:
        """Run `coro` in the background on the running loop, keeping it alive until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("mockup_api task crashed name=%s", task.get_name(), exc_info=exc)

    def pool(self) -> ThreadPoolExecutor:
        """Return the render pool, rebuilt when MOCKUP_API_WORKERS changed."""
        size = settings.MOCKUP_API_WORKERS
        if self._pool is None or self._pool_size != size:
            if self._pool is not None:
                self._pool.shutdown(wait=False)  # running renders finish on their own
            self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="mockup-render")
            self._pool_size = size
        return self._pool

    async def in_pool[T](self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run the blocking `fn` in the render pool and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool(), functools.partial(fn, *args, **kwargs))

    def pending(self) -> int:
        """Return how many background tasks are alive."""
        return sum(not task.done() for task in self._tasks)

    async def shutdown(self) -> None:
        """Cancel the background tasks of the running loop, wait for them, and stop the pool."""
        loop = asyncio.get_running_loop()
        mine = [task for task in self._tasks if task.get_loop() is loop]
        for task in mine:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*mine, return_exceptions=True)
        # Tasks of loops that are gone (a previous test's) can never run again.
        self._tasks = {task for task in self._tasks if not task.get_loop().is_closed()}
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        await close_shared_client()


runner = Runner()
