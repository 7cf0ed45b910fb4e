"""The one upstream (mockup API) client of this process, installed by JobsConfig.ready()."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

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


def check_deployment() -> None:
    """Refuse to mount the built-in mockup API in a multi-process deployment.

    Its tasks live in one process's memory: with several processes (REDIS_URL set) each would
    mount its own, and a worker asking another process's mount about a task would be told it
    does not exist. Serve it once, alone, and point every process at it.
    """
    if settings.REDIS_URL and settings.MOCKUP_API_URL is None:
        raise ImproperlyConfigured(
            "REDIS_URL is set (several processes), but MOCKUP_API_URL is not: the built-in "
            "mockup API keeps its state in one process and cannot be mounted in each. Run it "
            "once with `manage.py run_mockup_api --port 8100` and set "
            "MOCKUP_API_URL=http://<host>:8100/mockup-api for every process."
        )
