"""The event-socket registry: who is connected for which app id, and who gets that app's messages.

One process-wide `registry`. Every method that changes state is plain (non-async) code run on
the event loop, so a check and the update after it can never interleave with another
connection's: that is what makes the nonce race and the 4015 hand-over exact without locks.
Sending is async, so each connection has an outbox drained by one pump task, which keeps the
messages of every producer in the order they were published.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import random
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

logger = logging.getLogger(__name__)

CLOSE_REPLACED = 4015
REPLACED_REASON = "Switching to new connection from app-id"
# The fault knob: an abrupt server-side failure. Not 1011: daphne only sends 1000 and
# 3000-4999, and silently keeps the socket open for anything else.
CLOSE_DROPPED = 4011


class Socket(Protocol):
    """What the registry needs of a consumer."""

    async def send_json(self, content: Any, close: bool = False) -> None: ...

    async def close(self, code: int | None = None, reason: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class Close:
    """An outbox entry asking the pump to close the socket."""

    code: int
    reason: str | None = None


class AuthResult(enum.Enum):
    OK = "ok"
    BAD_SIGNATURE = "bad_signature"  # error 101, close 4001
    STALE_NONCE = "stale_nonce"  # error 103: a newer challenge for the app id superseded ours
    ALREADY = "already"  # error 102


@dataclass(eq=False)
class Connection:
    """One open event socket."""

    app_id: str
    socket: Socket
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    authenticated: bool = False
    closing: bool = False  # a close frame is queued or sent: nothing more goes out
    outbox: asyncio.Queue[dict | Close] = field(default_factory=asyncio.Queue)

    def deliver(self, message: dict) -> None:
        """Queue `message` for the socket, unless it is closing."""
        if not self.closing:
            self.outbox.put_nowait(message)

    def close_soon(self, code: int, reason: str | None = None) -> None:
        """Queue a close after whatever is already queued."""
        if not self.closing:
            self.closing = True
            self.outbox.put_nowait(Close(code, reason))

    async def pump(self) -> None:
        """Send the outbox in order until a close; apply the socket-drop fault knob."""
        while True:
            item = await self.outbox.get()
            if isinstance(item, Close):
                await self.socket.close(code=item.code, reason=item.reason)
                return
            if registry.chance() < settings.MOCKUP_API_SOCKET_DROP_RATE:
                logger.info("mockup_api socket dropped on purpose app_id=%s", self.app_id)
                self.closing = True
                registry.lost(self)
                await self.socket.close(code=CLOSE_DROPPED)
                return
            await self.socket.send_json(item)


class SocketRegistry:
    """Track every open event socket, the pending challenge and the current socket per app id."""

    chance = staticmethod(random.random)

    def __init__(self) -> None:
        self._open: set[Connection] = set()
        self._challenged: dict[str, Connection] = {}  # app id -> holder of the newest nonce
        self._current: dict[str, Connection] = {}  # app id -> authenticated connection
        self.auth_count = 0  # successful authentications since start (or reset)

    def open(self, app_id: str, socket: Socket) -> Connection:
        """Register a new socket and issue its challenge, superseding the app id's pending one."""
        connection = Connection(app_id, socket)
        self._open.add(connection)
        self._challenged[app_id] = connection
        return connection

    def authenticate(self, connection: Connection, signature: Any) -> AuthResult:
        """Check `signature` against the connection's nonce and make it the app id's socket."""
        if connection.authenticated:
            return AuthResult.ALREADY
        key = settings.MOCKUP_API_KEY.encode()
        expected = hmac.new(key, connection.nonce.encode(), hashlib.sha256).hexdigest()
        if not isinstance(signature, str) or not hmac.compare_digest(
            expected.encode(), signature.lower().encode()
        ):
            return AuthResult.BAD_SIGNATURE
        app_id = connection.app_id
        if self._challenged.get(app_id) is not connection:
            return AuthResult.STALE_NONCE
        del self._challenged[app_id]
        if (older := self._current.get(app_id)) is not None:
            older.close_soon(CLOSE_REPLACED, REPLACED_REASON)
        self._current[app_id] = connection
        connection.authenticated = True
        self.auth_count += 1
        return AuthResult.OK

    def publish(self, app_id: str, message: dict) -> bool:
        """Queue `message` for the app id's socket; drop it when there is none."""
        connection = self._current.get(app_id)
        if connection is None or connection.closing:
            return False
        connection.deliver(message)
        return True

    def lost(self, connection: Connection) -> None:
        """Stop routing to a connection the server is dropping."""
        if self._current.get(connection.app_id) is connection:
            del self._current[connection.app_id]

    def closed(self, connection: Connection) -> None:
        """Forget a connection whose socket is gone."""
        self._open.discard(connection)
        self.lost(connection)
        if self._challenged.get(connection.app_id) is connection:
            del self._challenged[connection.app_id]

    def connection_count(self, app_id: str) -> int:
        """Return how many live sockets `app_id` has open (authenticated or not)."""
        return sum(1 for c in self._open if c.app_id == app_id and not c.closing)

    def connections_total(self) -> int:
        """Return how many live sockets are open."""
        return sum(1 for c in self._open if not c.closing)

    def is_current(self, connection: Connection) -> bool:
        """Tell whether `connection` receives its app id's messages."""
        return self._current.get(connection.app_id) is connection

    def snapshot(self) -> dict[str, Any]:
        """Return the live sockets per app id, for the debug endpoint."""
        apps: dict[str, int] = {}
        for connection in self._open:
            if not connection.closing:
                apps[connection.app_id] = apps.get(connection.app_id, 0) + 1
        return {"apps": apps, "total": sum(apps.values()), "auth_count": self.auth_count}

    def reset(self) -> None:
        """Forget every connection (tests)."""
        self._open.clear()
        self._challenged.clear()
        self._current.clear()
        self.auth_count = 0


registry = SocketRegistry()
