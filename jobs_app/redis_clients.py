"""The running event loop's Redis clients, and the Lua scripts that run on them.

Every module that talks to Redis itself (the shared upstream limits, the stream registry) takes
its client from `redis_client(url)`, so a process holds one pool per loop and URL, all with the
same timeouts. channels-redis keeps its own connections (see photobooth/settings.py).
"""

from __future__ import annotations

import asyncio
import threading
import weakref

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

# Every call is a single round trip that takes well under a millisecond, and every caller has
# a fallback (decide in-process, count this process's streams), so a slow Redis is a dead
# Redis: give up within seconds rather than hold up a task or a stream that is opening.
SOCKET_TIMEOUT_SECONDS = 2.0  # also the longest wait for a free connection of the pool
CONNECT_TIMEOUT_SECONDS = 1.0  # a connect on a working network takes milliseconds
# Per process, loop and URL; each call holds a connection for one round trip, so a few dozen
# serve thousands of calls a second, and a burst waits its turn instead of opening hundreds.
MAX_CONNECTIONS = 32

# A pool's connections belong to the loop that opened them. Servers run one loop per process;
# tests start a new loop per test and some run a second loop in a thread, so clients are kept
# per loop, behind a lock.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Redis]] = (
    weakref.WeakKeyDictionary()
)
_clients_lock = threading.Lock()


def redis_client(url: str) -> Redis:
    """Return the running loop's Redis client for url (created on first use there)."""
    loop = asyncio.get_running_loop()
    with _clients_lock:
        clients = _clients.setdefault(loop, {})
        if (client := clients.get(url)) is None:
            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=MAX_CONNECTIONS,
                timeout=SOCKET_TIMEOUT_SECONDS,  # waiting for a free connection
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                # One immediate retry covers a pooled connection Redis closed while idle;
                # redis-py's default (10 retries with backoff) would hold a call for seconds
                # while Redis is down.
                retry=Retry(NoBackoff(), 1),
                # Replies as str: the stream registry parses its members, and the numbers the
                # upstream limits read convert from str as they would from bytes.
                decode_responses=True,
            )
            client = clients[url] = Redis.from_pool(pool)
    return client


async def close_redis_clients() -> None:
    """Close the running loop's Redis clients (at shutdown, and after each test).

    A later `redis_client()` call on this loop opens a new client.
    """
    with _clients_lock:
        clients = _clients.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.aclose()


def lua_script(source: str) -> AsyncScript:
    """Return a Lua script to run as `await script(keys, args, client=redis_client(url))`.

    redis-py's script runs by its SHA1 and loads itself on the first NOSCRIPT.
    """
    # `register_script` binds a script to one client, and ours are per loop. AsyncScript needs
    # its client only to encode a str source and as the default of `client=`: given bytes and
    # no client, one object serves every loop, and a call that forgets `client=` fails at once
    # instead of talking to whatever server a placeholder client would point at.
    return AsyncScript(None, source.encode())  # type: ignore[arg-type]
