"""The README's walk-through against a real daphne process, over real HTTP."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import image_bytes
from tests.live import daphne, migrate, server_env

E2E_WEBHOOK_SECRET = "whsec_ZTJlLXdlYmhvb2stc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWY="


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """Serve the embedded defaults (SQLite in a fresh folder) with daphne, as `make run` does."""
    # Plain daphne serves the web only (no worker): these tests follow tasks through the API
    # and the streams, and need them to wait in the queue (tests/test_upstream_*.py run workers).
    env = server_env(tmp_path_factory.mktemp("var"), WEBHOOK_SECRETS=E2E_WEBHOOK_SECRET)
    migrate(env)
    with daphne(env) as base:
        yield base


def test_a_bearer_client_uploads_creates_follows_and_cancels_a_task(server):
    api = httpx.Client(base_url=server, timeout=30)
    session = api.post("/api/sessions").json()
    api.headers["Authorization"] = f"Bearer {session['token']}"

    upload = api.post("/api/uploads", files={"image": ("me.png", image_bytes("PNG"), "image/png")})
    assert upload.status_code == 201, upload.text
    assert upload.json()["contentType"] == "image/png"

    cursor = api.get("/api/events").json()["cursor"]
    body = {"clientAppId": "e2e-booth", "kind": "generation", "style": "comic",
            "uploadId": upload.json()["uploadId"], "numberImages": 3}  # fmt: skip
    created = api.post("/api/tasks", json=body)
    assert created.status_code == 202
    task = created.json()
    assert task["status"] == "queued" and len(task["jobs"]) == 3

    events = api.get("/api/events", params={"after": cursor, "wait": 5}).json()
    assert [(e["type"], e["taskId"]) for e in events["events"]] == [("queued", task["taskId"])]

    assert api.get(f"/api/tasks/{task['taskId']}").json()["status"] == "queued"
    listed = api.get("/api/tasks", params={"clientAppId": "e2e-booth"}).json()
    assert [t["taskId"] for t in listed["results"]] == [task["taskId"]]

    cancelled = api.post(f"/api/tasks/{task['taskId']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["didCancel"] is True
    after = api.get("/api/events", params={"after": events["cursor"]}).json()["events"]
    assert [(e["type"], e["reason"]) for e in after] == [("cancelled", "user")]


def test_a_long_poll_is_woken_by_another_request(server):
    api = httpx.Client(base_url=server, timeout=30)
    token = api.post("/api/sessions").json()["token"]
    api.headers["Authorization"] = f"Bearer {token}"
    upload_id = api.post(
        "/api/uploads", files={"image": ("a.jpg", image_bytes(), "image/jpeg")}
    ).json()["uploadId"]
    cursor = api.get("/api/events").json()["cursor"]

    result: dict = {}

    def wait_for_events() -> None:
        started = time.monotonic()
        waiting = httpx.get(
            f"{server}/api/events",
            params={"after": cursor, "wait": 20},
            headers=dict(api.headers),
            timeout=30,
        )
        result.update(body=waiting.json(), seconds=time.monotonic() - started)

    waiter = threading.Thread(target=wait_for_events)
    waiter.start()
    time.sleep(0.5)
    body = {"clientAppId": "poller", "kind": "enhancement", "uploadId": upload_id}
    assert api.post("/api/tasks", json=body).status_code == 202
    waiter.join(25)
    assert [e["type"] for e in result["body"]["events"]] == ["queued"]
    assert result["seconds"] < 20  # woken by the event, not by the end of the wait


def test_a_browser_needs_the_csrf_token_for_writes(server):
    browser = httpx.Client(base_url=server, timeout=30)
    assert browser.post("/api/sessions").status_code == 201
    csrf = browser.cookies["csrftoken"]
    refused = browser.post("/api/tasks", json={})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    accepted = browser.post(
        "/api/uploads",
        files={"image": ("a.webp", image_bytes("WEBP"), "image/webp")},
        headers={"X-CSRFToken": csrf, "Referer": server + "/"},
    )
    assert accepted.status_code == 201, accepted.text


def test_an_oversized_body_is_refused_before_it_is_read(server):
    token = httpx.post(f"{server}/api/sessions").json()["token"]
    big = io.BytesIO(b"\xff\xd8\xff" + b"\0" * (20 * 1024 * 1024))
    response = httpx.post(
        f"{server}/api/uploads",
        files={"image": ("big.jpg", big, "image/jpeg")},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"


def test_real_sse_and_websocket_clients_follow_a_task(server):
    """An EventSource-like client and a WebSocket client see the same events, in order."""
    import asyncio
    import json

    import websockets

    from tests.live import SSEReader

    api = httpx.Client(base_url=server, timeout=30)
    token = api.post("/api/sessions").json()["token"]
    api.headers["Authorization"] = f"Bearer {token}"
    upload_id = api.post(
        "/api/uploads", files={"image": ("a.jpg", image_bytes(), "image/jpeg")}
    ).json()["uploadId"]
    ws_url = server.replace("http://", "ws://") + "/ws/progress/?clientAppId=live"

    async def follow_with_websocket(ready: threading.Event, out: list) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(ws_url, additional_headers=headers) as socket:
            out.append(json.loads(await socket.recv()))
            ready.set()
            for _ in range(2):
                out.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))

    ws_ready, ws_messages = threading.Event(), []
    ws_thread = threading.Thread(
        target=lambda: asyncio.run(follow_with_websocket(ws_ready, ws_messages))
    )
    ws_thread.start()
    with api.stream("GET", "/progress/client", params={"clientAppId": "live"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = SSEReader(response)
        assert events.event()["type"] == "connected"
        assert ws_ready.wait(10)
        body = {"clientAppId": "live", "kind": "enhancement", "uploadId": upload_id}
        task = api.post("/api/tasks", json=body).json()
        api.post(f"/api/tasks/{task['taskId']}/cancel")
        sse_events = [events.event(), events.event()]
    ws_thread.join(15)
    assert [e["type"] for e in sse_events] == ["queued", "cancelled"]
    assert [m["type"] for m in ws_messages] == ["connected", "queued", "cancelled"]
    assert [e["id"] for e in sse_events] == [m["id"] for m in ws_messages[1:]]
    assert sse_events[0]["_sse"]["id"] == sse_events[0]["id"]


def test_task_streams_end_after_the_terminal_event_with_the_contracts_close(server):
    """Over a real daphne: a WebSocket task stream closes with 1000 after the terminal event,
    another session's task is refused with 4003, and an SSE task stream's response ends."""
    import asyncio
    import json

    import websockets

    from tests.live import SSEReader

    api = httpx.Client(base_url=server, timeout=30)
    token = api.post("/api/sessions").json()["token"]
    api.headers["Authorization"] = f"Bearer {token}"
    upload_id = api.post(
        "/api/uploads", files={"image": ("a.jpg", image_bytes(), "image/jpeg")}
    ).json()["uploadId"]
    body = {"clientAppId": "ends", "kind": "enhancement", "uploadId": upload_id}
    task_id = api.post("/api/tasks", json=body).json()["taskId"]
    assert api.post(f"/api/tasks/{task_id}/cancel").json()["didCancel"] is True
    stranger = api.post("/api/sessions", headers={"Authorization": ""}).json()["token"]
    ws_base = server.replace("http://", "ws://") + "/ws/progress/"

    async def follow(token: str) -> tuple[list[str], int]:
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(
            f"{ws_base}?taskId={task_id}", additional_headers=headers
        ) as socket:
            types = []
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    types.append(json.loads(await asyncio.wait_for(socket.recv(), 10))["type"])
            return types, socket.close_code

    assert asyncio.run(follow(token)) == (["connected", "queued", "cancelled"], 1000)
    assert asyncio.run(follow(stranger)) == ([], 4003)

    with api.stream("GET", f"/progress/{task_id}") as response:
        events = SSEReader(response)
        assert [events.event()["type"] for _ in range(3)] == ["connected", "queued", "cancelled"]
        with pytest.raises(EOFError):
            events.event()  # the response ended


def test_webhooks_over_real_http_are_verified_stored_and_deduplicated(server):
    """Signed with the Standard Webhooks reference implementation, sent over real HTTP."""
    import json
    import uuid
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    body = json.dumps(
        {
            "type": "generation_task_finished",
            "timestamp": "2026-11-26T00:00:00Z",
            "data": {"id": "gt_nobody_knows", "status": "completed", "jobs": []},
        }
    )
    webhook_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(E2E_WEBHOOK_SECRET).sign(webhook_id, now, body),
        "Content-Type": "application/json",
    }
    url = f"{server}/webhooks/mockup-api"
    assert httpx.post(url, content=body, headers=headers).status_code == 202  # unknown task
    assert httpx.post(url, content=body, headers=headers).status_code == 202  # still pending
    forged = {**headers, "webhook-signature": "v1," + "A" * 44}
    response = httpx.post(url, content=body, headers=forged)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    assert (
        httpx.post(url, content=body, headers={**headers, "webhook-timestamp": "x"}).status_code
        == 400
    )
