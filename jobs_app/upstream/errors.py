"""Errors of the upstream client, classified for retrying."""

from __future__ import annotations


class UpstreamError(Exception):
    """A call to the mockup API failed; `permanent` says whether retrying can help."""

    def __init__(self, message: str, *, permanent: bool, status: int | None = None, code: str = ""):
        super().__init__(message)
        self.permanent = permanent
        self.status = status
        self.code = code or ("upstream_rejected" if permanent else "upstream_unavailable")


class CircuitOpen(UpstreamError):
    """The upstream looks unhealthy; calls are held back until the breaker lets one through."""

    def __init__(self, retry_in: float):
        super().__init__("The mockup API circuit breaker is open.", permanent=False)
        self.retry_in = retry_in
