"""Result files: PNGs hosted for MOCKUP_API_RESULT_TTL_SECONDS at unguessable URLs, like a CDN.

The render pool's workers write the files (`render_jobs.save_png`, into `storage_dir()`). The
file's modification time is its birth certificate, so expiry needs no index and survives
restarts. Expired files are deleted lazily: when someone asks for one, and by an occasional
sweep when new files are written.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse

from mockup_api.runner import runner

NAME_PATTERN = r"[0-9a-f]{32}\.png"  # 128 random bits: the URL is the capability
SWEEP_EVERY_SECONDS = 60  # at most one directory scan a minute, however busy the renderer is
_NAME_RE = re.compile(NAME_PATTERN)
_last_sweep = 0.0


def storage_dir() -> Path:
    """Return (and create) the folder of the hosted files."""
    path = Path(settings.MEDIA_ROOT) / "mockup-api"
    path.mkdir(parents=True, exist_ok=True)
    return path


def url_base(request: HttpRequest) -> str:
    """Return the absolute URL that file names are appended to, as the client reached us."""
    # Reverse a placeholder and cut it off: the prefix differs between mounted and standalone.
    placeholder = "0" * 32 + ".png"
    path = reverse("mockup_api:file", kwargs={"name": placeholder})
    return request.build_absolute_uri(path.removesuffix(placeholder))


def sweep_now_and_then() -> None:
    """Start a sweep in a thread, at most once every SWEEP_EVERY_SECONDS (call after saving)."""
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep >= SWEEP_EVERY_SECONDS:
        _last_sweep = now
        runner.spawn(asyncio.to_thread(sweep), name="mockup-files-sweep")


def read(name: str) -> bytes | None:
    """Return the bytes of a live hosted file, or None (unknown, or expired and now deleted)."""
    if not _NAME_RE.fullmatch(name):
        return None
    path = storage_dir() / name
    try:
        if _expired(path.stat().st_mtime):
            path.unlink(missing_ok=True)
            return None
        return path.read_bytes()
    except FileNotFoundError:
        return None


def seconds_left(name: str) -> int:
    """Return how long a hosted file still lives (for Cache-Control)."""
    try:
        born = (storage_dir() / name).stat().st_mtime
    except FileNotFoundError:
        return 0
    return max(0, int(born + settings.MOCKUP_API_RESULT_TTL_SECONDS - time.time()))


def sweep() -> int:
    """Delete every expired file; return how many went."""
    deleted = 0
    for path in storage_dir().glob("*.png"):
        try:
            if _expired(path.stat().st_mtime):
                path.unlink(missing_ok=True)
                deleted += 1
        except FileNotFoundError:
            continue  # another sweep or a reader got there first
    return deleted


def _expired(mtime: float) -> bool:
    return time.time() - mtime >= settings.MOCKUP_API_RESULT_TTL_SECONDS
