"""Fixtures and helpers for the built-in mockup API's tests (tests/test_mockup_api_*.py).

Test modules load them with `pytest_plugins = ["tests.mockup_fixtures"]` and reach everything
through fixtures: importing this module directly would keep pytest from rewriting its asserts.
Local HTTP servers in threads play the outside world: one serves input images, one receives
webhooks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient
from PIL import Image
from standardwebhooks import Webhook

from tests.live import ROOT, free_port, server_env

API_KEY = "test-mockup-api-key"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"mockup-api-test-webhook-secret!!").decode()
TIMEOUT = 5.0  # seconds any single wait in these tests may take before it counts as a hang


def jpeg_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    """Return a small real JPEG with some structure for the styles to work on."""
    image = Image.radial_gradient("L").resize(size).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def sign_nonce(nonce: str, key: str = API_KEY) -> str:
    """Return the socket auth signature of `nonce`."""
    return hmac.new(key.encode(), nonce.encode(), hashlib.sha256).hexdigest()


# --- Local HTTP servers --------------------------------------------------------------------


@dataclass
class Recorded:
    """One request a local server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class LocalServer:
    """A threaded HTTP server: serves `routes` to GETs, records every request."""

    routes: dict[str, tuple[int, str, bytes, dict[str, str]]] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)  # answers to POSTs, then 204 forever
    requests: list[Recorded] = field(default_factory=list)
    base: str = ""

    def url(self, path: str) -> str:
        return self.base + path

    def serve(
        self,
        path: str,
        body: bytes = b"",
        content_type: str = "image/jpeg",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.routes[path] = (status, content_type, body, headers or {})

    def verify(self, recorded: Recorded, secret: str = WEBHOOK_SECRET) -> dict:
        """Return the body of a webhook delivery after checking its Standard Webhooks signature."""
        return Webhook(secret).verify(recorded.body, recorded.headers)

    async def wait_for_webhook(
        self, match: Callable[[dict], bool], timeout: float = TIMEOUT
    ) -> dict:
        """Wait for a verified webhook whose body matches; return that body."""
        deadline = time.monotonic() + timeout
        while True:
            bodies = [self.verify(post) for post in self.posts()]
            if found := [body for body in bodies if match(body)]:
                return found[0]
            if time.monotonic() > deadline:
                pytest.fail(f"no matching webhook among {len(bodies)}")
            await asyncio.sleep(0.02)

    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    async def wait_for_posts(self, count: int, timeout: float = TIMEOUT) -> list[Recorded]:
        """Wait (without blocking the loop) until `count` POSTs arrived; return them."""
        deadline = time.monotonic() + timeout
        while len(self.posts()) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"expected {count} POSTs, got {len(self.posts())}")
            await asyncio.sleep(0.01)
        return self.posts()


def _handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            server.requests.append(
                Recorded(self.command, self.path, dict(self.headers.items()), body)
            )
            return body

        def do_GET(self) -> None:
            self._record()
            status, content_type, body, headers = server.routes.get(
                urlsplit(self.path).path, (404, "text/plain", b"not found", {})
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self._record()
            status = server.statuses.pop(0) if server.statuses else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass  # keep the test output clean

    return Handler


@contextmanager
def local_server() -> Iterator[LocalServer]:
    """Run a LocalServer on a free port for the duration of the block."""
    server = LocalServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    server.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def image_server() -> Iterator[LocalServer]:
    """A local server with a 64x48 JPEG at /photo.jpg."""
    with local_server() as server:
        server.serve("/photo.jpg", jpeg_bytes())
        yield server


@pytest.fixture
def webhook_receiver(settings) -> Iterator[LocalServer]:
    """A local webhook endpoint, wired into MOCKUP_API_WEBHOOK_URL."""
    with local_server() as server:
        settings.MOCKUP_API_WEBHOOK_URL = server.url("/webhooks/mockup-api")
        yield server


# --- The API in this process ----------------------------------------------------------------


class EventSocket:
    """A WebsocketCommunicator on the event socket, with waiting helpers."""

    def __init__(self, communicator: WebsocketCommunicator, app_id: str):
        self.communicator = communicator
        self.app_id = app_id

    async def receive(self, timeout: float = TIMEOUT) -> dict:
        """Return the next frame: a JSON message, or the close frame as {"close": code, ...}."""
        output = await self.communicator.receive_output(timeout)
        if output["type"] == "websocket.close":
            return {"close": output.get("code"), "reason": output.get("reason")}
        return json.loads(output["text"])

    async def receive_until(
        self, done: Callable[[dict], bool], timeout: float = TIMEOUT
    ) -> list[dict]:
        """Return every message up to and including the first for which `done` is true."""
        messages = []
        deadline = time.monotonic() + timeout
        while True:
            message = await self.receive(max(0.01, deadline - time.monotonic()))
            messages.append(message)
            if done(message):
                return messages

    async def nothing_more(self, wait: float = 0.2) -> bool:
        """Tell whether no frame arrives within `wait` seconds."""
        return await self.communicator.receive_nothing(wait)

    async def send(self, message: dict) -> None:
        await self.communicator.send_json_to(message)

    async def authenticate(self, challenge: dict, key: str = API_KEY) -> dict:
        await self.send({"type": "auth", "signature": sign_nonce(challenge["nonce"], key)})
        return await self.receive()


class MockupApi:
    """The in-process API: REST through AsyncClient, sockets through Channels' communicator."""

    def __init__(self) -> None:
        # Headers go on each call: AsyncClient(headers=...) mangles them into the ASGI scope.
        self.client = AsyncClient()
        self.anonymous = self.client
        self._sockets: list[WebsocketCommunicator] = []

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    async def get(self, path: str, **query: str):
        return await self.client.get(path, query, headers=self.auth)

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None):
        return await self.client.post(
            path,
            json.dumps(body),
            content_type="application/json",
            headers={**self.auth, **(headers or {})},
        )

    async def delete(self, path: str):
        return await self.client.delete(path, headers=self.auth)

    async def create_generation(self, image_url: str, **fields: Any) -> dict:
        body = {
            "app_id": "booth",
            "kind": "generation",
            "style": "pop-art",
            "number_images": 2,
            "seed": 7,
            "image_url": image_url,
            **fields,
        }
        response = await self.post("/mockup-api/v2/generation-tasks", body)
        assert response.status_code == 201, response.content
        return response.json()["data"]

    async def task(self, task_id: str) -> dict:
        response = await self.get(f"/mockup-api/v2/generation-tasks/{task_id}")
        assert response.status_code == 200, response.content
        return response.json()["data"]

    async def wait_for_task(self, task_id: str, timeout: float = TIMEOUT) -> dict:
        """Poll a generation task until it is final, as a reconciling client would."""
        deadline = time.monotonic() + timeout
        while (task := await self.task(task_id))["finished_at"] is None:
            if time.monotonic() > deadline:
                pytest.fail(f"task {task_id} did not finish: {task}")
            await asyncio.sleep(0.02)
        return task

    async def download(self, url: str):
        return await self.anonymous.get(urlsplit(url).path)

    async def open_socket(self, app_id: str = "booth", query: str | None = None) -> EventSocket:
        """Connect an event socket and read its challenge (left unanswered)."""
        from photobooth.asgi import application

        path = "/mockup-api/v2/socket" + (query if query is not None else f"?app_id={app_id}")
        communicator = WebsocketCommunicator(application, path)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected
        self._sockets.append(communicator)
        return EventSocket(communicator, app_id)

    async def socket(self, app_id: str = "booth") -> EventSocket:
        """Connect and authenticate an event socket."""
        socket = await self.open_socket(app_id)
        reply = await socket.authenticate(await socket.receive())
        assert reply == {"type": "authenticated", "app_id": app_id}, reply
        return socket

    async def close(self) -> None:
        for communicator in self._sockets:
            try:
                await communicator.disconnect(timeout=TIMEOUT)
            except Exception:
                await communicator.wait(TIMEOUT)  # the consumer already ended


def reset_mockup_api() -> None:
    """Forget every task, socket, bucket and held webhook of the in-process API."""
    from mockup_api.connections import registry
    from mockup_api.queue import render_queue
    from mockup_api.ratelimit import limiter
    from mockup_api.store import store
    from mockup_api.webhooks import webhooks

    for part in (registry, render_queue, limiter, store, webhooks):
        part.reset()


@pytest.fixture
async def mockup_api(settings, monkeypatch) -> AsyncIterator[MockupApi]:
    """The in-process API with fast, fault-free knobs and a clean state."""
    from mockup_api import webhooks
    from mockup_api.runner import runner

    settings.MOCKUP_API_KEY = API_KEY
    settings.WEBHOOK_SECRETS = [WEBHOOK_SECRET]
    settings.MOCKUP_API_WEBHOOK_URL = ""  # no webhooks unless a test wires a receiver
    settings.MOCKUP_API_STEP_SECONDS = 0
    settings.MOCKUP_API_STEPS = 4
    settings.MOCKUP_API_WORKERS = 2
    settings.MOCKUP_API_FAILURE_RATE = 0.0
    settings.MOCKUP_API_DUPLICATE_WEBHOOK_RATE = 0.0
    settings.MOCKUP_API_REORDER_WEBHOOKS = False
    settings.MOCKUP_API_SOCKET_DROP_RATE = 0.0
    settings.MOCKUP_API_RATE_LIMIT = 1000
    settings.MOCKUP_API_RATE_WINDOW_SECONDS = 60
    settings.MOCKUP_API_RESULT_TTL_SECONDS = 3600
    monkeypatch.setattr(webhooks, "RETRY_DELAYS", (0.01, 0.01, 0.01, 0.01, 0.01))
    reset_mockup_api()
    api = MockupApi()
    yield api
    await api.close()
    await runner.shutdown()
    reset_mockup_api()


# --- The API in its own process -------------------------------------------------------------


@contextmanager
def run_mockup_api(var_dir: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start `manage.py run_mockup_api` on a free port; yield its base URL and the process."""
    port = free_port()
    environment = server_env(var_dir, MOCKUP_API_KEY=API_KEY, WEBHOOK_SECRETS=WEBHOOK_SECRET, **env)
    command = [sys.executable, "manage.py", "run_mockup_api", "--port", str(port)]
    log_path = var_dir / "run_mockup_api.log"
    var_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:  # a file, not a pipe: a full pipe would stall the server
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    probe = f"{base}/mockup-api/v2/files/{'0' * 32}.png"  # unauthenticated, spends no tokens
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(probe, timeout=1).status_code == 404:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"run_mockup_api did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class Standalone:
    """The API in its own process, with the local servers it talks to."""

    base: str
    process: subprocess.Popen
    images: LocalServer | None = None
    webhooks: LocalServer | None = None
    api_key: str = API_KEY

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def socket_url(self, app_id: str) -> str:
        return self.base.replace("http://", "ws://") + f"/mockup-api/v2/socket?app_id={app_id}"

    @staticmethod
    def signature(nonce: str) -> str:
        return sign_nonce(nonce)


@pytest.fixture(scope="module")
def standalone_mockup_api(tmp_path_factory) -> Iterator[Standalone]:
    """One `run_mockup_api` process per test module, fast knobs, webhooks to a local receiver."""
    with local_server() as images, local_server() as receiver:
        images.serve("/photo.jpg", jpeg_bytes())
        env = {
            "PUBLIC_BASE_URL": receiver.base,  # the API posts to <PUBLIC_BASE_URL>/webhooks/...
            "MOCKUP_API_STEP_SECONDS": "0.01",
            "MOCKUP_API_STEPS": "3",
            "MOCKUP_API_RATE_LIMIT": "1000",
        }
        with run_mockup_api(tmp_path_factory.mktemp("mockup-api"), **env) as (base, process):
            yield Standalone(base, process, images, receiver)


@pytest.fixture
def mockup_api_process(tmp_path) -> Callable[..., AbstractContextManager[Standalone]]:
    """Start a `run_mockup_api` process of the test's own (a context manager factory)."""

    @contextmanager
    def start(**env: str) -> Iterator[Standalone]:
        with run_mockup_api(tmp_path / "var", **env) as (base, process):
            yield Standalone(base, process)

    return start
