"""Server-Sent Events streams (contract section 4).

`/progress/client?clientAppId=X`, `/progress/session`, `/progress/<taskId>`: unnamed events.
`/api/sse/stream?channels=client:X,task:Y,session`: named events (`event: <type>`).

`handle()` only opens the stream and returns; delivery then runs in the stream's own tasks
(see streams.EventStream) while the consumer waits for the client to leave.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from jobs_app import metrics
from jobs_app.stream_access import (
    TooManyStreams,
    client_scope,
    multiplex_scope,
    resolve_caller,
    session_scope,
    task_scope,
)
from jobs_app.stream_consumer import StreamConsumerMixin
from jobs_app.streams import StreamScope
from photobooth.errors import PhotoboothError, error_body

logger = logging.getLogger(__name__)

SSE_HEADERS = [
    (b"Content-Type", b"text/event-stream; charset=utf-8"),
    (b"Cache-Control", b"no-cache"),
    (b"X-Accel-Buffering", b"no"),
]
RETRY_MILLISECONDS = 3000


def sse_frame(payload: dict[str, Any], *, named: bool) -> bytes:
    """Return one SSE message: `id:` is the event's cursor, `event:` its type when named."""
    lines = [f"id: {payload['id']}"]
    if named:
        lines.append(f"event: {payload['type']}")
    lines.append("data: " + json.dumps(payload, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


class EventStreamConsumer(StreamConsumerMixin, AsyncHttpConsumer):
    """One SSE stream; the URL route says which scope (see jobs_app/routing.py)."""

    transport = "sse"
    named_events = False

    async def http_request(self, message: dict[str, Any]) -> None:
        """Open the stream and keep the consumer alive for group messages.

        AsyncHttpConsumer stops right after `handle()` returns; an open stream must outlive
        it, so only a refused or already finished stream stops here.
        """
        if message.get("more_body"):
            return  # a GET has no body worth reading
        await self.handle(b"")
        if self.stream is None:
            await self.disconnect()
            raise StopConsumer()

    async def handle(self, body: bytes) -> None:
        if self.scope["method"] not in ("GET", "HEAD"):
            await self._refuse(405, "method_not_allowed", "Use GET.", {"Allow": "GET"})
            return
        params = {k: v[-1] for k, v in parse_qs(self.scope["query_string"].decode()).items()}
        try:
            self.session, stream_scope = await self._authorize(params)
        except PhotoboothError as exc:
            metrics.CONNECTIONS_REFUSED.labels("sse", exc.default_code).inc()
            await self._refuse(exc.status_code, exc.default_code, str(exc.detail))
            return
        try:
            stream = await self.new_stream(self.session, stream_scope, settings.STREAM_MAX_SECONDS)
        except TooManyStreams as exc:
            await self._refuse(429, exc.default_code, str(exc.detail), {"Retry-After": "5"})
            return
        if not await stream.prepare(self._cursor(params)):
            # A finished task read past its last event: nothing more will ever come.
            await self.release_stream()
            await self.send_response(204, b"")
            return
        await self.send_headers(status=200, headers=SSE_HEADERS)
        await self.send_body(f"retry: {RETRY_MILLISECONDS}\n\n".encode(), more_body=True)
        await stream.start()

    def _cursor(self, params: dict[str, str]) -> str | None:
        """Return the resume cursor: the Last-Event-ID header wins over ?lastEventId=."""
        for name, value in self.scope.get("headers", []):
            if name.lower() == b"last-event-id" and value:
                return value.decode("latin1")
        return params.get("lastEventId") or None

    async def _refuse(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await self.send_response(
            status,
            json.dumps(error_body(code, message)).encode(),
            headers=[(b"Content-Type", b"application/json"), *extra],
        )

    @database_sync_to_async
    def _authorize(self, params: dict[str, str]) -> tuple[Any, StreamScope]:
        session = resolve_caller(self.scope)
        return session, self.stream_scope(session, params)

    def stream_scope(self, session, params: dict[str, str]) -> StreamScope:
        raise NotImplementedError

    async def _emit(self, payload: dict[str, Any]) -> None:
        await self.send_body(sse_frame(payload, named=self.named_events), more_body=True)

    async def _heartbeat(self) -> None:
        await self.send_body(b": heartbeat\n\n", more_body=True)

    async def _finish(self, reason: str) -> None:
        """End the response; the client reconnects and resumes from its last id."""
        stream_was_open = self.stream is not None
        try:
            await self.release_stream()
        finally:
            # End the response even when leaving the groups failed, so the client reconnects.
            if stream_was_open:
                await self.send_body(b"", more_body=False)
        self.stop()

    async def disconnect(self) -> None:
        await self.release_stream()


class ClientStreamConsumer(EventStreamConsumer):
    def stream_scope(self, session, params: dict[str, str]) -> StreamScope:
        return client_scope(session, params.get("clientAppId"))


class SessionStreamConsumer(EventStreamConsumer):
    def stream_scope(self, session, params: dict[str, str]) -> StreamScope:
        return session_scope(session)


class TaskStreamConsumer(EventStreamConsumer):
    def stream_scope(self, session, params: dict[str, str]) -> StreamScope:
        return task_scope(session, self.scope["url_route"]["kwargs"]["task_id"])


class MultiplexStreamConsumer(EventStreamConsumer):
    named_events = True

    def stream_scope(self, session, params: dict[str, str]) -> StreamScope:
        return multiplex_scope(session, params.get("channels", ""))
