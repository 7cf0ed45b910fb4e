"""The one event socket per process: challenge, auth, then every generation task's messages.

Reconnects with jittered exponential backoff. Close code 4015 means a newer connection took
our app id: we take a fresh one. After every (re)connection `on_connected` runs, which
reconciles in-flight tasks over REST, so nothing that happened while we were away is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from django.conf import settings
from websockets.exceptions import ConnectionClosed

from jobs_app.upstream.client import UpstreamClient

logger = logging.getLogger(__name__)

CLOSE_REPLACED = 4015
ERROR_INVALID_NONCE = 103
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
AUTH_TIMEOUT_SECONDS = 10

OnMessage = Callable[[dict[str, Any]], Awaitable[None]]
OnConnected = Callable[[], Awaitable[None]]


def sign_nonce(nonce: str) -> str:
    """Return the auth signature of a challenge: hex HMAC-SHA256(api key, nonce)."""
    return hmac.new(settings.MOCKUP_API_KEY.encode(), nonce.encode(), hashlib.sha256).hexdigest()


class AuthFailed(Exception):
    """The upstream refused our auth answer."""

    def __init__(self, code: Any, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


class UpstreamSocket:
    """Keep one authenticated event socket open and hand its messages on."""

    def __init__(self, client: UpstreamClient, on_message: OnMessage, on_connected: OnConnected):
        self.client = client
        self.on_message = on_message
        self.on_connected = on_connected
        self.connected = asyncio.Event()
        self.connections_made = 0
        # Failed attempts since the last successful authentication: the backoff grows with
        # them and starts over once a connection worked, however it ended.
        self.failures = 0

    async def run(self) -> None:
        """Stay connected until cancelled."""
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                if code == CLOSE_REPLACED:
                    logger.warning("upstream_socket_replaced app_id=%s", self.client.app_id)
                    self.client.renew_app_id()
                else:
                    logger.warning("upstream_socket_lost app_id=%s code=%s",
                                   self.client.app_id, code)  # fmt: skip
                self.failures += 1
            except AuthFailed as exc:
                logger.warning("upstream_socket_auth_failed code=%s", exc.code)
                self.failures += 1
            except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
                logger.warning("upstream_socket_unreachable error=%r", exc)
                self.failures += 1
            except Exception:
                # Anything else (a malformed challenge, a database error while applying a
                # message): this task is the process's only socket, so it must not die.
                logger.exception("upstream_socket_failed app_id=%s", self.client.app_id)
                self.failures += 1
            finally:
                self.connected.clear()
            # Full jitter: many processes reconnecting at once must not stampede.
            cap = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(self.failures, 10))
            await asyncio.sleep(random.uniform(0, cap) if self.failures else 0.05)

    async def _session(self) -> None:
        async with websockets.connect(
            self.client.socket_url, open_timeout=10, ping_interval=20, max_size=2**20
        ) as socket:
            await self._authenticate(socket)
            self.failures = 0
            self.connections_made += 1
            self.connected.set()
            logger.info("upstream_socket_connected app_id=%s", self.client.app_id)
            await self.on_connected()
            async for raw in socket:
                try:
                    message = json.loads(raw)
                except ValueError:
                    logger.warning("upstream_socket_bad_message raw=%r", raw[:200])
                    continue
                if isinstance(message, dict):
                    await self.on_message(message)

    async def _authenticate(self, socket) -> None:
        async with asyncio.timeout(AUTH_TIMEOUT_SECONDS):
            challenge = json.loads(await socket.recv())
            if challenge.get("type") != "challenge":
                raise AuthFailed("protocol", f"expected a challenge, got {challenge!r}")
            answer = {"type": "auth", "signature": sign_nonce(challenge["nonce"])}
            await socket.send(json.dumps(answer))
            while True:
                answer = json.loads(await socket.recv())
                if answer.get("type") == "authenticated":
                    return
                if answer.get("type") == "error":
                    # 103 "Invalid nonce": another login on our app id raced us; back off, retry.
                    raise AuthFailed(answer.get("code"), answer.get("message", ""))
