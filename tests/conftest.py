"""Shared fixtures: personas (owner and stranger sessions), API clients and test images.

Tests marked `postgres` or `redis` need the real service. Without it they skip with the
reason, unless CI is set: there the service is mandatory and a missing one fails the test.
"""

from __future__ import annotations

import io
import json
import os
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from PIL import Image

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def pytest_runtest_setup(item: pytest.Item) -> None:
    needs = {"redis": (REDIS_HOST, REDIS_PORT), "postgres": (POSTGRES_HOST, POSTGRES_PORT)}
    for marker, (host, port) in needs.items():
        if item.get_closest_marker(marker) and not _reachable(host, port):
            reason = f"{marker} is not reachable at {host}:{port}"
            if os.environ.get("CI"):
                pytest.fail(f"{reason}, and CI requires it", pytrace=False)
            pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _drop_stray_connections(django_db_setup, django_db_blocker):
    """End connections that async views' worker threads left open, so PostgreSQL can drop
    the test database at the end of the run."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Keep every test's stored files in its own temporary folder."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _worker_db_on_the_test_thread(settings):
    """In-process tests drive worker parts whose database work must see the test's own
    transaction, which lives on asgiref's shared thread (real worker processes use threads of
    their own: tests/deployment.py, tests/upstream_helpers.py)."""
    settings.WORKER_DB_THREADS = 0
    settings.STREAM_DB_THREADS = 0


@pytest.fixture(autouse=True)
def _in_memory_channel_layer(settings):
    """Give every test a fresh in-memory layer (unless it opts into Redis)."""
    from channels.layers import channel_layers

    from photobooth.settings import in_memory_channel_layer

    settings.CHANNEL_LAYERS = {"default": in_memory_channel_layer()}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@dataclass
class Booth:
    """A persona: one booth session reached by bearer token."""

    session_id: str
    token: str
    client: Client

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, path: str, data: dict | None = None, headers: dict | None = None):
        return self.client.get(path, data, headers=self._headers(headers))

    def post(self, path: str, body: Any = None, headers: dict | None = None):
        payload = "" if body is None else json.dumps(body)
        return self.client.post(
            path, payload, content_type="application/json", headers=self._headers(headers)
        )

    def upload(self, content: bytes, name: str = "photo.jpg"):
        from django.core.files.uploadedfile import SimpleUploadedFile

        file = SimpleUploadedFile(name, content, content_type="application/octet-stream")
        return self.client.post("/api/uploads", {"image": file}, headers=self._headers(None))

    def create_task(self, body: dict, headers: dict | None = None):
        return self.post("/api/tasks", body, headers=headers)


def start_booth() -> Booth:
    client = Client()
    response = client.post("/api/sessions")
    assert response.status_code == 201, response.content
    body = response.json()
    return Booth(session_id=body["sessionId"], token=body["token"], client=Client())


@pytest.fixture
def owner(db) -> Booth:
    return start_booth()


@pytest.fixture
def stranger(db) -> Booth:
    return start_booth()


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), **save: Any) -> bytes:
    """Return a small real image with a gradient (so encoders have something to do)."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.fixture
def uploaded(owner: Booth) -> dict:
    """An upload of the owner's session."""
    response = owner.upload(image_bytes())
    assert response.status_code == 201, response.content
    return response.json()


def generation_body(upload_id: str, client_app_id: str = "booth-1", **extra: Any) -> dict:
    return {
        "clientAppId": client_app_id,
        "kind": "generation",
        "uploadId": upload_id,
        "style": "pop-art",
        "numberImages": 4,
        **extra,
    }
