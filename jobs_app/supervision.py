"""Background asyncio tasks that never fail unseen.

A task whose exception nobody retrieves is reported only when it is garbage-collected ("Task
exception was never retrieved"), long after the fact and without our log format, and a
worker part that ended that way stayed dead. So every task the worker starts goes through
here: `spawn` for one-off work (its exception is logged when it ends), `supervise` for a
long-running part (its exception is logged and the part starts again after a pause).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)

# A part that crashed starts again this much later: soon, but never a tight crash loop.
RESTART_SECONDS = 1.0


def log_failure(task: asyncio.Task) -> None:
    """Log the exception a finished task ended with (a done callback)."""
    if task.cancelled():
        return
    if (exc := task.exception()) is not None:
        logger.error("background_task_failed task=%s", task.get_name(), exc_info=exc)


def spawn(
    coro: Coroutine[Any, Any, Any], *, name: str, keep: set[asyncio.Task] | None = None
) -> asyncio.Task:
    """Start `coro` as a task whose exception is logged; hold it in `keep` while it runs."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    if keep is not None:
        keep.add(task)
        task.add_done_callback(keep.discard)
    task.add_done_callback(log_failure)
    return task


async def supervise(
    name: str, run: Callable[[], Awaitable[object]], *, restart_seconds: float = RESTART_SECONDS
) -> None:
    """Run `run()` until it returns; each time it raises, log it and start it again."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("worker_part_crashed part=%s restart_in=%s", name, restart_seconds)
        await asyncio.sleep(restart_seconds)
