"""The one client of the mockup API per server process (contract section 6).

Created in JobsConfig.ready() without I/O; the HTTP pool and the event socket start lazily, on
the server's event loop, the first time they are needed. One HTTP connection pool and one event
socket carry every task of every browser, extension and API client of this process.
"""

from __future__ import annotations

import asyncio
import json as json_module
import logging
import os
import secrets
import socket as socket_module
from typing import Any

import httpx
from django.conf import settings

from jobs_app.redis_clients import close_redis_clients
from jobs_app.upstream.errors import CircuitOpen, UpstreamError
from jobs_app.upstream.limits import Breaker, CircuitBreaker, Limiter, RateLimiter
from jobs_app.upstream.shared_limits import (
    SharedCircuitBreaker,
    SharedRateLimiter,
    SharedStore,
    credential_key,
)

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = httpx.Timeout(20.0, connect=5.0)
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
# Waiting on 429s is free, but not endless: past this a call counts as a transient failure.
MAX_RATE_LIMIT_WAIT_SECONDS = 120


def new_app_id() -> str:
    """Return an app id unique to this process, so two processes never kick each other off."""
    host = socket_module.gethostname().split(".")[0][:20]
    return f"{settings.MOCKUP_API_APP_ID}-{host}-{os.getpid()}-{secrets.token_hex(3)}"


class UpstreamClient:
    """HTTP calls to the mockup API, with its rate limits and a circuit breaker."""

    transport: httpx.AsyncBaseTransport | None = None  # tests may inject one

    def __init__(self) -> None:
        self.app_id = new_app_id()
        self.limiter: Limiter
        self.breaker: Breaker
        if settings.REDIS_URL:
            # Every process calls with one key: share its bucket and the upstream's health.
            store = SharedStore(settings.REDIS_URL)
            credential = credential_key(settings.MOCKUP_API_KEY)
            self.limiter = SharedRateLimiter(store, credential)
            self.breaker = SharedCircuitBreaker(store, credential)
        else:
            self.limiter = RateLimiter()
            self.breaker = CircuitBreaker()
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return (settings.MOCKUP_API_URL or f"{settings.PUBLIC_BASE_URL}/mockup-api").rstrip("/")

    @property
    def socket_url(self) -> str:
        scheme, _, rest = self.base_url.partition("://")
        ws_scheme = "wss" if scheme == "https" else "ws"
        return f"{ws_scheme}://{rest}/v2/socket?app_id={self.app_id}"

    def renew_app_id(self) -> None:
        """Take a fresh app id (after another connection took ours over: close code 4015)."""
        self.app_id = new_app_id()

    def http(self) -> httpx.AsyncClient:
        """Return the connection pool of the running loop (created on first use there)."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            self._http = httpx.AsyncClient(
                timeout=REQUEST_TIMEOUT,
                transport=self.transport,
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            )
            self._http_loop = loop
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        # The loop's Redis connections of the shared limits (none without REDIS_URL); another
        # client on this loop would simply open new ones.
        await close_redis_clients()

    # --- calls -----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Call the API and return its JSON; raise UpstreamError classified for retrying.

        `idempotency_key` (our task id) makes a creating POST safe to repeat: the upstream
        answers a repeated key with the task it created the first time (contract section 6).
        """
        if not await self.breaker.admit():
            raise CircuitOpen(self.breaker.retry_in())
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + MAX_RATE_LIMIT_WAIT_SECONDS
        headers = {"Authorization": f"Bearer {settings.MOCKUP_API_KEY}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        content = None
        if json is not None:
            # Canonical bytes: the upstream fingerprints a keyed request by its raw body, and a
            # resubmission (the body read back from the database) must match it exactly.
            content = json_module.dumps(json, sort_keys=True, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        while True:
            # After a 429 this waits out its Retry-After, for every worker when shared.
            if not await self.limiter.wait(give_up_at):
                raise UpstreamError(f"{method} {path}: rate limited", permanent=False,
                                    status=429, code="upstream_rate_limited")  # fmt: skip
            try:
                response = await self.http().request(
                    method, self.base_url + path, content=content, params=params, headers=headers
                )
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                await self.breaker.record(healthy=False)
                raise UpstreamError(f"{method} {path}: {exc!r}", permanent=False) from exc
            await self.limiter.learn(response)
            if response.status_code == 429:
                continue  # a 429 says nothing about the upstream's health
            await self.breaker.record(healthy=response.status_code < 500)
            return self._result(method, path, response)

    def _result(self, method: str, path: str, response: httpx.Response) -> Any:
        if response.status_code >= 500:
            raise UpstreamError(
                f"{method} {path}: {response.status_code}",
                permanent=False,
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise UpstreamError(
                f"{method} {path}: {response.status_code} {response.text[:300]}",
                permanent=True,
                status=response.status_code,
            )
        try:
            return response.json()
        except ValueError:
            # E.g. a proxy's HTML page: an UpstreamError like any other failure, so that
            # callers retry it instead of crashing on it (the task queue at start-up did).
            raise UpstreamError(
                f"{method} {path}: {response.status_code} answer is not JSON",
                permanent=False,
                status=response.status_code,
            ) from None

    async def catalog(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v2/catalog-products"))["data"]

    async def create_generation(
        self, body: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        path = "/v2/generation-tasks"
        return (await self.request("POST", path, json=body, idempotency_key=idempotency_key))[
            "data"
        ]

    async def get_generation(self, upstream_id: str) -> dict[str, Any]:
        return (await self.request("GET", f"/v2/generation-tasks/{upstream_id}"))["data"]

    async def cancel_generation(self, upstream_id: str) -> dict[str, Any]:
        return (await self.request("DELETE", f"/v2/generation-tasks/{upstream_id}"))["data"]

    async def create_mockups(
        self, body: dict[str, Any], *, idempotency_key: str
    ) -> list[dict[str, Any]]:
        path = "/v2/mockup-tasks"
        return (await self.request("POST", path, json=body, idempotency_key=idempotency_key))[
            "data"
        ]

    async def get_mockups(self, upstream_ids: list[str]) -> list[dict[str, Any]]:
        params = {"id": ",".join(upstream_ids)}
        return (await self.request("GET", "/v2/mockup-tasks", params=params))["data"]

    async def download(self, url: str) -> tuple[bytes, str]:
        """Fetch a hosted result file; return its bytes and content type."""
        try:
            async with self.http().stream("GET", url) as response:
                if response.status_code != 200:
                    raise UpstreamError(
                        f"GET {url}: {response.status_code}",
                        permanent=400 <= response.status_code < 500,
                        status=response.status_code,
                    )
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise UpstreamError(f"GET {url}: file too large", permanent=True)
                    chunks.append(chunk)
                return b"".join(chunks), response.headers.get("Content-Type", "")
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise UpstreamError(f"GET {url}: {exc!r}", permanent=False) from exc
