"""The server's event loop, so sync code in any thread can hand work to it.

The in-memory channel layer keeps asyncio queues bound to the loop that serves consumers; a
group_send from another thread's private loop (what async_to_sync does in a plain thread,
e.g. a worker's database thread) would fill those queues without waking anyone. So event
announcements (jobs_app.announcer) and doorbell rings go to the server loop, recorded by the
ASGI application on every call and by the `serve` and `worker` commands.
"""

from __future__ import annotations

import asyncio

_server_loop: asyncio.AbstractEventLoop | None = None


def remember_running_loop() -> None:
    """Record the running loop as the server loop (call from the ASGI application)."""
    global _server_loop
    _server_loop = asyncio.get_running_loop()


def server_loop() -> asyncio.AbstractEventLoop | None:
    """Return the server loop if it is running, else None."""
    loop = _server_loop
    if loop is None or loop.is_closed() or not loop.is_running():
        return None
    return loop
