"""What the WebSocket and SSE consumers share: opening, feeding and releasing one stream."""

from __future__ import annotations

from typing import Any

from jobs_app import metrics
from jobs_app.stream_access import TooManyStreams
from jobs_app.stream_registry import OpenStream, registry
from jobs_app.streams import EventStream, StreamOverflow, StreamScope


class StreamConsumerMixin:
    """Mix into a Channels consumer that defines `transport`, `_emit`, `_heartbeat`, `_finish`."""

    transport: str
    stream: EventStream | None = None

    def new_stream(self, session, scope: StreamScope, lifetime: float | None) -> EventStream:
        """Create the connection's stream, registered against the per-session cap.

        Raise TooManyStreams when the session already holds the most streams it may.
        """
        stream = EventStream(
            session=session,
            scope=scope,
            layer=self.channel_layer,
            channel_name=self.channel_name,
            transport=self.transport,
            emit=self._emit,
            heartbeat=self._heartbeat,
            finish=self._finish,
            lifetime_seconds=lifetime,
        )
        if not registry.register(
            stream.connection_id, OpenStream(self.transport, scope.kind, str(session.pk))
        ):
            metrics.CONNECTIONS_REFUSED.labels(self.transport, TooManyStreams.default_code).inc()
            raise TooManyStreams()
        self.stream = stream
        return stream

    async def event_published(self, message: dict[str, Any]) -> None:
        """Queue a group message for the stream's writer; close a stream that cannot keep up."""
        if self.stream is None or self.stream.finished:
            return
        try:
            self.stream.offer(message)
        except StreamOverflow:
            metrics.SLOW_CONSUMER_CLOSES.labels(self.transport).inc()
            await self._finish("overflow")

    async def release_stream(self) -> None:
        """Unregister the stream and leave its groups (idempotent)."""
        if self.stream is not None:
            stream, self.stream = self.stream, None
            registry.unregister(stream.connection_id)
            await stream.close()
