"""The one upstream (mockup API) client of this process, installed by JobsConfig.ready()."""

from __future__ import annotations

from jobs_app.upstream.client import UpstreamClient

_client: UpstreamClient | None = None


def install(client: UpstreamClient) -> None:
    global _client
    _client = client


def get_client() -> UpstreamClient:
    """Return the process's upstream client (created once, without I/O, at start-up)."""
    if _client is None:
        raise RuntimeError("the upstream client is installed by JobsConfig.ready()")
    return _client
