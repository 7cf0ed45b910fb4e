"""The event socket `/v2/socket?app_id=<id>`: challenge, auth, then the app's task messages."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from mockup_api.connections import AuthResult, Connection, registry
from mockup_api.runner import runner
from mockup_api.validation import APP_ID_RE

CLOSE_BAD_SIGNATURE = 4001
CLOSE_BAD_REQUEST = 4400  # no or malformed app_id

_AUTH_ERRORS = {
    AuthResult.BAD_SIGNATURE: (101, "Invalid signature"),
    AuthResult.ALREADY: (102, "Already authenticated"),
    AuthResult.STALE_NONCE: (103, "Invalid nonce"),
}


class EventSocketConsumer(AsyncJsonWebsocketConsumer):
    """Authenticate one app id's socket and stream its generation tasks' messages."""

    # No channel layer. Channels gives every consumer a channel on the default layer and listens
    # on it, so with Redis (our layer) down the socket crashed and the stand-in's tasks failed.
    # This consumer publishes through mockup_api.connections, never the layer, and in Channels
    # 4.3 an alias with no CHANNEL_LAYERS entry makes get_channel_layer() return None, so
    # __call__ creates no channel and awaits the client alone. It also has no groups to join.
    channel_layer_alias = None
    connection: Connection | None = None
    pump: asyncio.Task | None = None

    # This consumer never touches the database, so it skips the close_old_connections() that
    # Channels runs around every message: a hop to the thread that sync views share, per frame.
    async def dispatch(self, message: dict) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict) -> None:
        await self.disconnect(message["code"])  # no groups to leave, no connections to close
        raise StopConsumer()

    async def connect(self) -> None:
        await self.accept()  # refusals are close frames after accepting, so clients can read them
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        app_id = (query.get("app_id") or [""])[0]
        if not APP_ID_RE.fullmatch(app_id):
            await self.close(code=CLOSE_BAD_REQUEST, reason="app_id is missing or malformed")
            return
        self.connection = registry.open(app_id, self)
        self.pump = runner.spawn(self.connection.pump(), name=f"mockup-socket-{app_id}")
        self.connection.deliver({"type": "challenge", "nonce": self.connection.nonce})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            content = json.loads(text_data or "")
        except ValueError:
            content = None
        if not isinstance(content, dict):
            self._error(100, "Messages are JSON objects")
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        connection = self.connection
        if connection is None:
            return  # refused at connect; the close frame is on its way
        kind = content.get("type")
        if kind == "ping":
            connection.deliver({"type": "pong"})
        elif kind == "auth":
            self._authenticate(connection, content.get("signature"))
        else:
            self._error(100, f"Unknown message type {kind!r}")

    def _authenticate(self, connection: Connection, signature: Any) -> None:
        outcome = registry.authenticate(connection, signature)
        if outcome is AuthResult.OK:
            connection.deliver({"type": "authenticated", "app_id": connection.app_id})
            return
        code, message = _AUTH_ERRORS[outcome]
        self._error(code, message)
        if outcome is AuthResult.BAD_SIGNATURE:
            connection.close_soon(CLOSE_BAD_SIGNATURE, message)

    def _error(self, code: int, message: str) -> None:
        if self.connection is not None:
            self.connection.deliver({"type": "error", "code": code, "message": message})

    async def disconnect(self, code: int) -> None:
        if self.connection is not None:
            registry.closed(self.connection)
        if self.pump is not None:
            self.pump.cancel()
