"""The streams open in this process: the per-session cap and `/api/sse/stats`.

Per process on purpose: each daphne process enforces the cap for the connections it holds and
reports its own figures (a load balancer that pins a session to a process makes the cap exact).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from threading import Lock

from django.conf import settings

from jobs_app import metrics


@dataclass(frozen=True, slots=True)
class OpenStream:
    transport: str  # "sse" | "ws"
    scope_kind: str  # "client" | "session" | "task" | "multiplex"
    session_id: str


class StreamRegistry:
    def __init__(self) -> None:
        self._streams: dict[str, OpenStream] = {}
        self._lock = Lock()

    def register(self, connection_id: str, stream: OpenStream) -> bool:
        """Record an open stream; return False when its session is at the cap."""
        with self._lock:
            open_for_session = sum(
                1 for s in self._streams.values() if s.session_id == stream.session_id
            )
            if open_for_session >= settings.STREAM_MAX_PER_SESSION:
                return False
            self._streams[connection_id] = stream
        metrics.CONNECTIONS_OPENED.labels(stream.transport, stream.scope_kind).inc()
        metrics.CONNECTIONS_OPEN.labels(stream.transport).inc()
        return True

    def unregister(self, connection_id: str) -> None:
        with self._lock:
            stream = self._streams.pop(connection_id, None)
        if stream is not None:
            metrics.CONNECTIONS_OPEN.labels(stream.transport).dec()

    def stats(self) -> dict:
        """Return the contract's stats object for this process."""
        with self._lock:
            streams = list(self._streams.values())
        by_transport = Counter(s.transport for s in streams)
        by_scope = Counter(s.scope_kind for s in streams)
        return {
            "connections": {
                "total": len(streams),
                "sse": by_transport["sse"],
                "ws": by_transport["ws"],
                "byScope": {k: by_scope[k] for k in ("client", "session", "task", "multiplex")},
            },
            "sessions": len({s.session_id for s in streams}),
        }


registry = StreamRegistry()
