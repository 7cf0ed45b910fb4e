"""One outgoing HTTP client per event loop for the stand-in's webhooks and input fetches.

A new `httpx.AsyncClient` per call builds a fresh SSL context each time (`ssl.
create_default_context` took ~70% of the stand-in's event loop under load) and opens a new
connection per request; one shared client keeps its pool. Per loop, because tests run many.
"""

from __future__ import annotations

import asyncio
import weakref

import httpx

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def shared_client() -> httpx.AsyncClient:
    """Return the running loop's client (created on first use; redirects are not followed)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )
        _clients[loop] = client
    return client


async def close_shared_client() -> None:
    """Close the running loop's client (at shutdown)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
