"""What the WebSocket and SSE consumers share: serving, opening and releasing one stream.

A stream consumer has no channel of its own: the process's StreamHub receives the group
messages for every stream and hands them to the stream directly. So the consumer only waits
for its client's messages, in its own task, with no task or queue for a channel besides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from autobahn.exception import Disconnected
from channels.exceptions import StopConsumer

from jobs_app import metrics
from jobs_app.stream_access import TooManyStreams
from jobs_app.stream_hub import get_hub
from jobs_app.stream_registry import OpenStream, StreamRegistry, get_registry
from jobs_app.streams import ClientGone, EventStream, StreamScope

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
    serving: asyncio.Task | None = None  # the task that runs the consumer
    waiting_for_client = False  # the serving task is parked in receive()
    stopping = False

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Dispatch the client's messages until the consumer stops, then free the stream slot
        however it ended.

        Channels' own loop would also receive on a channel of the consumer's own (see the
        module's docstring). Channels calls `disconnect()` only when the client goes away; a
        handler that raised or a task that daphne cancelled (application_close_timeout) ends
        here too.
        """
        self.scope, self.base_send = scope, send
        self.serving = asyncio.current_task()
        try:
            while not self.stopping:
                self.waiting_for_client = True
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    if not self.stopping:
                        raise
                    self.serving.uncancel()  # our own stop(), not daphne's
                    break
                finally:
                    self.waiting_for_client = False
                await self.dispatch(message)
        except StopConsumer:
            pass
        except ClientGone:
            # A send (the replay, an answer) found the client gone: nothing failed.
            logger.debug("stream_client_gone transport=%s", self.transport)
        finally:
            await self.release_stream()

    def stop(self) -> None:
        """End the consumer after the message it handles now (from any of its tasks)."""
        self.stopping = True
        if self.waiting_for_client and self.serving is not asyncio.current_task():
            self.serving.cancel()

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
            hub=get_hub(),
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
