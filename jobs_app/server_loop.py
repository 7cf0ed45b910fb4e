"""The server's event loop, so sync code in any thread can hand coroutines to it.

The in-memory channel layer keeps asyncio queues bound to the loop that serves consumers; a
group_send from another thread's private loop (what async_to_sync does in a plain thread,
e.g. a worker) would fill those queues without waking anyone. So announcements go to the
server loop, recorded by the ASGI application on every call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync

_server_loop: asyncio.AbstractEventLoop | None = None
SUBMIT_TIMEOUT_SECONDS = 10


def remember_running_loop() -> None:
    """Record the running loop as the server loop (call from the ASGI application)."""
    global _server_loop
    _server_loop = asyncio.get_running_loop()


def run_on_server_loop(function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run a coroutine function on the server loop from sync code and return its result."""
    loop = _server_loop
    if loop is None or loop.is_closed() or not loop.is_running():
        return async_to_sync(function)(*args)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError("run_on_server_loop called from the server loop itself; await it")
    future = asyncio.run_coroutine_threadsafe(function(*args), loop)
    return future.result(SUBMIT_TIMEOUT_SECONDS)
