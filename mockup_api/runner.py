"""Lifetime of the stand-in's background work: asyncio tasks on the server's loop, one render pool.

Views and consumers start work with `runner.spawn()`, which keeps a strong reference until the
task ends (the loop itself only keeps weak ones). Pillow work goes through `runner.in_pool()`:
the functions of `mockup_api.render_jobs` run in a pool of MOCKUP_API_WORKERS processes, so
renders never hold this process's GIL and the event loop stays prompt while they run.

The pool is the process's, not a loop's: it starts on the first render (its workers all at
once, off the loop), survives `shutdown()` of one loop's work (tests run many loops) and stops
with `close()`: at the end of `run_mockup_api`, when daphne's reactor stops (`manage.py serve`),
and at interpreter exit. Workers start from a fork server (spawned where there is none): the
server is a threaded asyncio process, which must never fork itself. A pool whose worker died is
replaced, and the calls it failed are tried once more on the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from django.conf import settings

from mockup_api import render_jobs
from mockup_api.http import close_shared_client

logger = logging.getLogger(__name__)


def _start_context() -> multiprocessing.context.BaseContext:
    """Return the forkserver context (preloading the render modules), else spawn's."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # No effect once the fork server runs; '__main__' is what the fork server loads by default.
    context.set_forkserver_preload(["__main__", "concurrent.futures.process", render_jobs.__name__])
    return context


class Runner:
    """Own the background tasks and the render pool of this process."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._pool: ProcessPoolExecutor | None = None
        self._pool_size = 0
        self._pool_lock = threading.Lock()  # pools are built in threads, closed from any
        self._closing_with_reactor = False
        self.pools_started = 0  # how many pools this process started (tests, diagnostics)

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

    async def in_pool[T](self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn` (a module-level function of plain, picklable arguments) in the render pool.

        A call that breaks the pool (a worker died: killed, out of memory) is tried once more on
        a new pool; if that breaks too, BrokenProcessPool reaches the caller.
        """
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        for attempt in (1, 2):
            pool = await self.pool()
            try:
                return await loop.run_in_executor(pool, call)
            except BrokenProcessPool:
                self._discard(pool)
                if attempt == 2:
                    raise
                logger.warning("mockup_api render pool broke; trying the call once more")
        raise AssertionError("unreachable")

    async def pool(self) -> ProcessPoolExecutor:
        """Return the render pool: started on first use, replaced when MOCKUP_API_WORKERS
        changed or a worker died."""
        size = settings.MOCKUP_API_WORKERS
        pool = self._pool
        if pool is not None and self._pool_size == size:
            return pool
        # Starting processes blocks (the first one waits for the fork server): not on the loop.
        pool = await asyncio.to_thread(self._start_pool, size)
        self._close_with_reactor()
        return pool

    def _start_pool(self, size: int) -> ProcessPoolExecutor:
        with self._pool_lock:
            if self._pool is not None and self._pool_size == size:
                return self._pool  # another caller started it meanwhile
            old = self._pool
            pool = ProcessPoolExecutor(
                max_workers=size, mp_context=_start_context(), initializer=render_jobs.init_worker
            )
            for _ in range(size):
                pool.submit(render_jobs.warm_up)  # one submit per idle-less call starts a worker
            self._pool, self._pool_size = pool, size
            self.pools_started += 1
        if old is not None:
            old.shutdown(wait=False)  # its running renders finish, then its workers exit
        logger.info("mockup_api render pool started workers=%s", size)
        return pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Forget a broken pool (its manager already ended its workers)."""
        with self._pool_lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False)

    def worker_pids(self) -> list[int]:
        """Return the pids of the render pool's worker processes (tests, diagnostics)."""
        pool = self._pool
        processes = getattr(pool, "_processes", None) or {}
        return sorted(processes)

    def close(self, *, wait: bool = True) -> None:
        """Stop the render pool: drop queued calls, let running ones end, reap the workers."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)
            logger.info("mockup_api render pool stopped")

    def _close_with_reactor(self) -> None:
        """Under daphne, stop the pool when the reactor stops.

        `manage.py serve` knows nothing of the built-in API; without this the pool would stop
        only at interpreter exit, after running every call still queued.
        """
        reactor = sys.modules.get("twisted.internet.reactor")
        if self._closing_with_reactor or reactor is None or not getattr(reactor, "running", False):
            return
        self._closing_with_reactor = True
        # wait=False: the loop goes on; the workers are reaped before the interpreter exits.
        stop = functools.partial(self.close, wait=False)
        reactor.addSystemEventTrigger("before", "shutdown", stop)

    def pending(self) -> int:
        """Return how many background tasks are alive."""
        return sum(not task.done() for task in self._tasks)

    async def shutdown(self, *, close_pool: bool = False) -> None:
        """Cancel the background tasks of the running loop and wait for them; with
        `close_pool`, also stop the render pool (at server shutdown)."""
        loop = asyncio.get_running_loop()
        mine = [task for task in self._tasks if task.get_loop() is loop]
        for task in mine:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*mine, return_exceptions=True)
        # Tasks of loops that are gone (a previous test's) can never run again.
        self._tasks = {task for task in self._tasks if not task.get_loop().is_closed()}
        if close_pool:
            await asyncio.to_thread(self.close)
        await close_shared_client()


runner = Runner()
