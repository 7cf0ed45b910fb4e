"""Who holds which open stream: the per-session cap and `/api/sse/stats`.

Two registries with one async interface. Without REDIS_URL (the embedded default, one
process) the streams are counted in this process. With REDIS_URL, several daphne processes
serve streams behind a load balancer, so the count lives in Redis and the cap and the stats
are deployment-wide (jobs_app/stream_registry_redis.py, docs/streams.md "Stream registry").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypedDict

from django.conf import settings
from rest_framework import status

from photobooth.errors import PhotoboothError

TRANSPORTS = ("sse", "ws")
SCOPE_KINDS = ("client", "session", "task", "multiplex")


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenStream:
    """One open stream as the registry counts it; if you add a field, update the Redis
    registry's `_member`/`_parse_member` too."""

    transport: str  # "sse" | "ws"
    scope_kind: str  # "client" | "session" | "task" | "multiplex"
    session_id: str


class ConnectionStats(TypedDict):
    total: int
    sse: int
    ws: int
    byScope: dict[str, int]


class StreamStats(TypedDict):
    connections: ConnectionStats
    sessions: int


class StatsUnavailable(PhotoboothError):
    """The shared registry (Redis) did not answer, so there are no deployment-wide figures."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "stats_unavailable"
    default_detail = "Stream statistics are unavailable: the shared registry does not answer."


def stats_of(streams: Iterable[OpenStream]) -> StreamStats:
    """Return the contract's stats object (section 7 "Stats") for these streams."""
    streams = list(streams)
    by_transport = Counter(s.transport for s in streams)
    by_scope = Counter(s.scope_kind for s in streams)
    return {
        "connections": {
            "total": len(streams),
            "sse": by_transport["sse"],
            "ws": by_transport["ws"],
            "byScope": {kind: by_scope[kind] for kind in SCOPE_KINDS},
        },
        "sessions": len({s.session_id for s in streams}),
    }


class StreamRegistry:
    """The interface both registries implement. Do not instantiate directly."""

    async def register(self, connection_id: str, stream: OpenStream) -> bool:
        """Record an open stream; return False when its session is at the cap."""
        raise NotImplementedError

    async def unregister(self, connection_id: str) -> None:
        """Forget a stream (idempotent); never raises, so it is safe in `finally`."""
        raise NotImplementedError

    async def stats(self) -> StreamStats:
        """Return the contract's stats object for every stream the registry sees."""
        raise NotImplementedError

    def open_here(self) -> Counter[str]:
        """Return this process's open streams by transport (the `/metrics` gauge)."""
        raise NotImplementedError


class LocalStreamRegistry(StreamRegistry):
    """The streams of this one process: exact when the process is the whole deployment.

    Every method runs on the event loop without awaiting, so check-and-add is atomic.
    """

    def __init__(self) -> None:
        self._streams: dict[str, OpenStream] = {}

    async def register(self, connection_id: str, stream: OpenStream) -> bool:
        held = sum(1 for s in self._streams.values() if s.session_id == stream.session_id)
        if held >= settings.STREAM_MAX_PER_SESSION:
            return False
        self._streams[connection_id] = stream
        return True

    async def unregister(self, connection_id: str) -> None:
        self._streams.pop(connection_id, None)

    async def stats(self) -> StreamStats:
        return stats_of(self._streams.values())

    def open_here(self) -> Counter[str]:
        # list(): the /metrics view reads this from a worker thread.
        return Counter(s.transport for s in list(self._streams.values()))


_local = LocalStreamRegistry()
_shared: dict[tuple[str, str], StreamRegistry] = {}


def get_registry() -> StreamRegistry:
    """Return the registry for the current settings: Redis when REDIS_URL is set."""
    url = settings.REDIS_URL
    if not url:
        return _local
    key = (url, settings.STREAM_REGISTRY_PREFIX)
    if key not in _shared:
        from jobs_app.stream_registry_redis import RedisStreamRegistry

        _shared[key] = RedisStreamRegistry(url, prefix=key[1])
    return _shared[key]


def open_streams_here() -> Counter[str]:
    """Return the streams this process holds, by transport, whichever registry holds them."""
    total = _local.open_here()
    for registry in list(_shared.values()):
        total += registry.open_here()
    return total
