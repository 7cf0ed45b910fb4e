"""What the WebSocket and SSE consumers share: opening, feeding and releasing one stream."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from autobahn.exception import Disconnected

from jobs_app import metrics
from jobs_app.events import EVENT_MESSAGE_TYPE
from jobs_app.stream_access import TooManyStreams
from jobs_app.stream_registry import OpenStream, StreamRegistry, get_registry
from jobs_app.streams import ClientGone, EventStream, StreamOverflow, StreamScope

logger = logging.getLogger(__name__)

# What a send to a client that already left raises: daphne's WebSocket (autobahn) raises
# Disconnected while the socket is closing, before daphne hears the client went away; the
# ASGI spec asks other servers for an OSError.
CLIENT_GONE_ERRORS = (Disconnected, OSError)


class StreamConsumerMixin:
    """Mix into a Channels consumer that defines `transport`, `_emit`, `_heartbeat`, `_finish`."""

    transport: str
    stream: EventStream | None = None
    # The registry that counted the stream releases it, even if settings change meanwhile.
    stream_registry: StreamRegistry | None = None

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Run the consumer, then free its stream slot however it ended.

        Channels calls `disconnect()` only when the client goes away; a handler that raised
        or a task that daphne cancelled (application_close_timeout) ends here too.
        """
        try:
            await super().__call__(scope, receive, send)
        except ClientGone:
            # A send (the replay, an answer) found the client gone: nothing failed.
            logger.debug("stream_client_gone transport=%s", self.transport)
        finally:
            await self.release_stream()

    @staticmethod
    async def to_client(send: Awaitable[None]) -> None:
        """Await a send to the client; raise ClientGone when it has gone already."""
        try:
            await send
        except CLIENT_GONE_ERRORS as exc:
            raise ClientGone() from exc

    async def new_stream(self, session, scope: StreamScope, lifetime: float | None) -> EventStream:
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
        registry = get_registry()
        counted = OpenStream(
            transport=self.transport, scope_kind=scope.kind, session_id=str(session.pk)
        )
        if not await registry.register(stream.connection_id, counted):
            metrics.CONNECTIONS_REFUSED.labels(self.transport, TooManyStreams.default_code).inc()
            raise TooManyStreams()
        # No await between registering and keeping the stream: release_stream() sees it.
        self.stream, self.stream_registry = stream, registry
        metrics.CONNECTIONS_OPENED.labels(self.transport, scope.kind).inc()
        return stream

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Hand group messages to the stream without Channels' per-message database hop.

        AsyncConsumer.dispatch runs `aclose_old_connections()` (a trip to the shared sync
        thread) before every handler. Delivery touches no database, and each database call
        of a stream closes stale connections itself (in_db_thread, database_sync_to_async).
        """
        if message["type"] == EVENT_MESSAGE_TYPE:
            await self.event_published(message)
        else:
            await super().dispatch(message)

    async def event_published(self, message: dict[str, Any]) -> None:
        """Queue a group message for the stream; close a stream that cannot keep up."""
        if self.stream is None or self.stream.finished:
            return
        try:
            self.stream.offer(message)
        except StreamOverflow:
            metrics.SLOW_CONSUMER_CLOSES.labels(self.transport).inc()
            await self._finish("overflow")

    async def release_stream(self) -> None:
        """Free the stream's slot and leave its groups (idempotent)."""
        if self.stream is None:
            return
        stream, self.stream = self.stream, None
        try:
            # First, and never raising: the session may open another stream at once.
            await self.stream_registry.unregister(stream.connection_id)
        finally:
            await stream.close()
