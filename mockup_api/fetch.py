"""Fetch input images by URL, as a remote service would: async, bounded in time and size.

Transient failures (no connection, a timeout, 429 or 5xx: the caller's server restarting
behind its load balancer) are retried with backoff for about 15 s; a 4xx or a bad image fails
at once.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urljoin, urlsplit

import httpx

from mockup_api import render_jobs
from mockup_api.http import shared_client
from mockup_api.runner import runner

MAX_BYTES = 20 * 1024 * 1024
TIMEOUT_SECONDS = 20.0
MAX_REDIRECTS = 3
# Pauses between attempts (6 attempts in all); tests may shorten it.
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class InputUnavailable(Exception):
    """The input URL could not be fetched or decoded."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def _same_origin(first: str, second: str) -> bool:
    a, b = urlsplit(first), urlsplit(second)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


async def fetch_bytes(url: str) -> bytes:
    """Return the body at `url`, retrying transient failures; raise InputUnavailable."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return await _fetch_once(url)
        except InputUnavailable as exc:
            if not exc.transient or delay is None:
                raise
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def _fetch_once(url: str) -> bytes:
    """Return the body at `url`; follow redirects (by hand) only within its origin."""
    target = url
    client = shared_client()
    try:
        for _ in range(MAX_REDIRECTS + 1):
            async with client.stream("GET", target, timeout=TIMEOUT_SECONDS) as response:
                if response.is_redirect:
                    location = urljoin(target, response.headers.get("location", ""))
                    if not _same_origin(url, location):
                        raise InputUnavailable(f"redirect to another host: {location}")
                    target = location
                    continue
                if response.status_code != 200:
                    raise InputUnavailable(
                        f"GET {target} answered {response.status_code}",
                        transient=response.status_code in TRANSIENT_STATUSES,
                    )
                return await _read_limited(response)
    except httpx.HTTPError as exc:
        message = f"GET {target} failed: {exc.__class__.__name__}"
        raise InputUnavailable(message, transient=True) from exc
    raise InputUnavailable(f"more than {MAX_REDIRECTS} redirects")


async def _read_limited(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES:
        raise InputUnavailable(f"input is over {MAX_BYTES} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > MAX_BYTES:
            raise InputUnavailable(f"input is over {MAX_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_image(url: str) -> bytes:
    """Return the body at `url` once the render pool decoded it as an image (the workers keep
    it decoded for the renders to come); raise InputUnavailable."""
    data = await fetch_bytes(url)
    try:
        await runner.in_pool(render_jobs.check_image, data)
    except render_jobs.UndecodableImage as exc:
        raise InputUnavailable(f"input is not a decodable image: {exc}") from None
    return data
