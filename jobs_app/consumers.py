"""WebSocket progress stream: `/ws/progress/?clientAppId=X` (or `?scope=session`, `?taskId=Y`).

Thin on purpose: access checks live in stream_access, delivery in streams.EventStream, task
changes in actions. Refusals are sent after accepting, as a close code clients can read.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.http.request import validate_host

from jobs_app import metrics
from jobs_app.actions import do_cancel_task
from jobs_app.events import EventFilter
from jobs_app.stream_access import (
    WS_CLOSE_CODES,
    TooManyStreams,
    check_task,
    client_scope,
    headers_of,
    resolve_caller,
    session_scope,
    task_scope,
)
from jobs_app.stream_consumer import StreamConsumerMixin
from jobs_app.streams import StreamScope
from photobooth.errors import PhotoboothError
from sessions_app.authentication import bearer_token_of

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_TOO_SLOW = 4008
CLOSE_BAD_MESSAGE = 4400
CLOSE_NO_SESSION = 4001
CLOSE_FORBIDDEN = 4003
# An application may only close with 1000 or 3000-4999 (RFC 6455 7.4.2): daphne's autobahn
# raises on anything else and the socket stays open and silent. So not the contract's 1001 for
# "going away", nor 1011 for a failure: 4000 + the HTTP status, like the contract's own codes
# (docs/streams.md, "Close codes"). Clients reconnect and resume from their cursor on both.
CLOSE_STREAM_FAILED = 4500  # the stream failed on the server
CLOSE_GOING_AWAY = 4503  # the server ends the stream (lifetime)

# How a stream that ends closes its socket, by the reason EventStream gives.
FINISH_CLOSE_CODES = {
    "task_finished": CLOSE_NORMAL,
    "overflow": CLOSE_TOO_SLOW,
    "lifetime": CLOSE_GOING_AWAY,
    "error": CLOSE_STREAM_FAILED,
}


class ProgressConsumer(StreamConsumerMixin, AsyncJsonWebsocketConsumer):
    transport = "ws"
    closing = False

    async def connect(self) -> None:
        await self.accept()
        params = {k: v[-1] for k, v in parse_qs(self.scope["query_string"].decode()).items()}
        try:
            refusal = self._origin_refusal()
            if refusal:
                metrics.CONNECTIONS_REFUSED.labels("ws", "origin").inc()
                await self.close(refusal)
                return
            self.session, stream_scope = await self._authorize(params)
        except PhotoboothError as exc:
            metrics.CONNECTIONS_REFUSED.labels("ws", exc.default_code).inc()
            await self.close(WS_CLOSE_CODES.get(exc.status_code, CLOSE_FORBIDDEN))
            return
        try:
            stream = await self.new_stream(self.session, stream_scope, lifetime=None)
        except TooManyStreams:
            await self.close(WS_CLOSE_CODES[429])
            return
        if not await stream.prepare(params.get("cursor") or None):
            await self._finish("task_finished")
            return
        await stream.start()

    def _origin_refusal(self) -> int | None:
        """Browsers must come from an allowed host; clients without Origin need a token."""
        headers = headers_of(self.scope)
        origin = headers.get("origin")
        if origin is None:
            return None if bearer_token_of(headers) else CLOSE_NO_SESSION
        host = urlparse(origin).hostname or ""
        allowed = [h.strip("[]") for h in settings.ALLOWED_HOSTS]
        return None if validate_host(host, allowed) else CLOSE_FORBIDDEN

    @database_sync_to_async
    def _authorize(self, params: dict[str, str]) -> tuple[Any, StreamScope]:
        session = resolve_caller(self.scope)
        if "taskId" in params:
            return session, task_scope(session, params["taskId"])
        if params.get("scope") == "session":
            return session, session_scope(session)
        return session, client_scope(session, params.get("clientAppId"))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        try:
            content = json.loads(text_data or "")
        except ValueError:
            await self.close(CLOSE_BAD_MESSAGE)
            return
        if not isinstance(content, dict) or self.stream is None:
            await self.close(CLOSE_BAD_MESSAGE)
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs) -> None:
        action = content.get("action")
        handler = {
            "ping": self._ping,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "cancel": self._cancel,
            "resume": self._resume,
        }.get(action)
        if handler is None:
            await self.close(CLOSE_BAD_MESSAGE)
            return
        await handler(content)

    async def _ping(self, content: dict[str, Any]) -> None:
        await self.send_json({"type": "pong"})

    async def _task_of(self, content: dict[str, Any], action: str):
        """Return the caller's task named in an action, or send the contract's error."""
        try:
            return await database_sync_to_async(check_task)(self.session, content.get("taskId"))
        except PhotoboothError as exc:
            await self.send_json(
                {"type": "error", "code": "forbidden", "message": str(exc.detail),
                 "action": action, "taskId": content.get("taskId")}
            )  # fmt: skip
            return None

    async def _subscribe(self, content: dict[str, Any]) -> None:
        task = await self._task_of(content, "subscribe")
        if task is None:
            return
        current = self.stream.event_filter
        task_ids = current.task_ids | {str(task.pk)}
        self.stream.follow(
            EventFilter(whole_session=current.whole_session,
                        client_app_ids=current.client_app_ids, task_ids=task_ids)
        )  # fmt: skip
        await self.stream.join(self.stream.event_filter.groups(self.session.pk))
        await self.send_json({"type": "ack", "action": "subscribe", "taskId": str(task.pk)})

    async def _unsubscribe(self, content: dict[str, Any]) -> None:
        task = await self._task_of(content, "unsubscribe")
        if task is None:
            return
        current = self.stream.event_filter
        remaining = EventFilter(whole_session=current.whole_session,
                                client_app_ids=current.client_app_ids,
                                task_ids=current.task_ids - {str(task.pk)})  # fmt: skip
        self.stream.follow(remaining)
        await self.stream.leave(self.stream.groups - remaining.groups(self.session.pk))
        await self.send_json({"type": "ack", "action": "unsubscribe", "taskId": str(task.pk)})

    async def _cancel(self, content: dict[str, Any]) -> None:
        task = await self._task_of(content, "cancel")
        if task is None:
            return
        outcome = await database_sync_to_async(do_cancel_task)(task)
        await self.send_json(
            {"type": "ack", "action": "cancel", "taskId": str(task.pk),
             "didCancel": outcome.did_cancel}
        )  # fmt: skip

    async def _resume(self, content: dict[str, Any]) -> None:
        cursor = content.get("cursor")
        if not isinstance(cursor, str):
            await self.close(CLOSE_BAD_MESSAGE)
            return
        await self.stream.resume(cursor)
        await self.send_json({"type": "ack", "action": "resume", "cursor": cursor})

    async def send_json(self, content: dict[str, Any], close: bool = False) -> None:
        await self.to_client(super().send_json(content, close))

    async def _emit(self, payload: dict[str, Any]) -> None:
        await self.send_json(payload)

    async def _heartbeat(self) -> None:
        await self.send_json({"type": "heartbeat"})

    async def _finish(self, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        if reason == "gone":
            # No close frame for a client that left: free its slot and groups now; daphne
            # sends websocket.disconnect once the connection is down.
            await self.release_stream()
            return
        await self.close(FINISH_CLOSE_CODES.get(reason, CLOSE_STREAM_FAILED))

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        # Leave groups and free the session's stream slot now, not when the client answers;
        # the close frame goes out even if leaving failed (Redis down is when streams fail).
        try:
            await self.release_stream()
        finally:
            await super().close(code, reason)

    async def disconnect(self, code: int) -> None:
        await self.release_stream()
