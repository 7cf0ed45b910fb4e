"""The built-in mockup API as its own process (`manage.py run_mockup_api`), over real sockets."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

pytest_plugins = ["tests.mockup_fixtures"]


async def authenticated(api, app_id: str) -> ClientConnection:
    """Open an event socket and pass its challenge."""
    socket = await connect(api.socket_url(app_id))
    challenge = json.loads(await socket.recv())
    assert challenge["type"] == "challenge"
    await socket.send(json.dumps({"type": "auth", "signature": api.signature(challenge["nonce"])}))
    assert json.loads(await socket.recv()) == {"type": "authenticated", "app_id": app_id}
    return socket


async def messages_until_completed(socket: ClientConnection, timeout: float = 10) -> list[dict]:
    messages: list[dict] = []
    async with asyncio.timeout(timeout):
        while not messages or messages[-1]["type"] != "taskCompleted":
            messages.append(json.loads(await socket.recv()))
    return messages


async def connections(api, client: httpx.AsyncClient) -> dict:
    response = await client.get(f"{api.base}/mockup-api/v2/debug/connections", headers=api.auth)
    return response.json()


async def test_a_generation_task_runs_end_to_end_over_http_and_websocket(standalone_mockup_api):
    api = standalone_mockup_api
    async with httpx.AsyncClient() as client:
        socket = await authenticated(api, "live-e2e")
        response = await client.post(
            f"{api.base}/mockup-api/v2/generation-tasks",
            headers=api.auth,
            json={
                "app_id": "live-e2e",
                "kind": "generation",
                "style": "comic",
                "number_images": 2,
                "seed": None,
                "image_url": api.images.url("/photo.jpg"),
            },
        )
        assert response.status_code == 201
        assert response.headers["X-Ratelimit-Limit"] == "1000"
        task_id = response.json()["data"]["id"]

        messages = await messages_until_completed(socket)
        await socket.close()
        assert messages[-1] == {"type": "taskCompleted", "taskId": task_id, "status": "completed"}
        for index in (0, 1):
            kinds = [m["type"] for m in messages if m.get("jobIndex") == index]
            assert kinds[0] == "jobState" and kinds[-1] == "jobResult"
            assert kinds.count("jobProgress") == 3
            assert kinds.count("jobPreview") == 1

        result = next(m for m in messages if m["type"] == "jobResult")
        assert result["url"].startswith(f"{api.base}/mockup-api/v2/files/")
        download = await client.get(result["url"])
        assert download.status_code == 200
        image = Image.open(io.BytesIO(download.content))
        assert (image.format, image.size) == ("PNG", (result["width"], result["height"]))

        task = (
            await client.get(
                f"{api.base}/mockup-api/v2/generation-tasks/{task_id}", headers=api.auth
            )
        ).json()["data"]
        assert task["status"] == "completed"

    webhook = await api.webhooks.wait_for_webhook(
        lambda b: (b["type"], b["data"]["id"]) == ("generation_task_finished", task_id), 10
    )
    assert webhook["data"]["status"] == "completed"


async def test_a_mockup_task_ends_with_a_signed_webhook(standalone_mockup_api):
    api = standalone_mockup_api
    design = api.images.url("/photo.jpg")
    body = {
        "format": "png",
        "products": [
            {
                "catalog_product_id": 84,
                "catalog_variant_ids": [8400],
                "placements": [{"placement": "front", "layers": [{"type": "file", "url": design}]}],
            }
        ],
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{api.base}/mockup-api/v2/mockup-tasks", headers=api.auth, json=body
        )
        assert response.status_code == 201
        task_id = response.json()["data"][0]["id"]

        webhook = await api.webhooks.wait_for_webhook(lambda b: b["data"]["id"] == task_id, 10)
        assert webhook["type"] == "mockup_task_finished"
        task = webhook["data"]
        assert task["status"] == "completed"
        url = task["catalog_variant_mockups"][0]["mockups"][0]["mockup_url"]
        assert url.startswith(f"{api.base}/mockup-api/v2/files/")
        assert (await client.get(url)).headers["Content-Type"] == "image/png"


async def test_a_second_connection_replaces_the_first_with_4015(standalone_mockup_api):
    api = standalone_mockup_api
    async with httpx.AsyncClient() as client:
        older = await authenticated(api, "live-one")
        assert (await connections(api, client))["apps"].get("live-one") == 1
        newer = await authenticated(api, "live-one")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(older.recv(), 5)
        assert closed.value.rcvd.code == 4015
        assert closed.value.rcvd.reason == "Switching to new connection from app-id"
        await asyncio.sleep(0.1)  # let the server see the closing handshake
        assert (await connections(api, client))["apps"].get("live-one") == 1
        await newer.send(json.dumps({"type": "ping"}))
        assert json.loads(await newer.recv()) == {"type": "pong"}
        await newer.close()


async def test_racing_challenges_leave_the_loser_with_103(standalone_mockup_api):
    api = standalone_mockup_api
    first = await connect(api.socket_url("live-race"))
    first_nonce = json.loads(await first.recv())["nonce"]
    second = await connect(api.socket_url("live-race"))
    second_nonce = json.loads(await second.recv())["nonce"]
    await first.send(json.dumps({"type": "auth", "signature": api.signature(first_nonce)}))
    assert json.loads(await first.recv()) == {
        "type": "error",
        "code": 103,
        "message": "Invalid nonce",
    }
    await second.send(json.dumps({"type": "auth", "signature": api.signature(second_nonce)}))
    assert json.loads(await second.recv())["type"] == "authenticated"
    await first.close()
    await second.close()


async def test_a_wrong_signature_is_closed_with_4001(standalone_mockup_api):
    api = standalone_mockup_api
    socket = await connect(api.socket_url("live-bad"))
    await socket.recv()
    await socket.send(json.dumps({"type": "auth", "signature": "00" * 32}))
    assert json.loads(await socket.recv())["code"] == 101
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd.code == 4001


async def test_it_refuses_calls_without_the_key(standalone_mockup_api):
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{standalone_mockup_api.base}/mockup-api/v2/catalog-products")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_unknown_paths_get_the_json_404(standalone_mockup_api):
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{standalone_mockup_api.base}/api/tasks")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def stat(pid: int) -> tuple[str, int] | None:
    """Return the state letter and the parent of `pid` (Linux's /proc), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            state, parent = file.read().rsplit(")", 1)[1].split()[:2]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return state, int(parent)


def processes_below(pid: int) -> list[int]:
    """Return the pids of every process below `pid`."""
    parents = {int(entry): stat(int(entry)) for entry in os.listdir("/proc") if entry.isdigit()}
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        below = [child for child, info in parents.items() if info and info[1] == parent]
        found += below
        todo += below
    return found


def start_rendering(api, image_server, app_id: str, *, images: int) -> list[int]:
    """Create a generation task and return the processes below the API once it renders.

    The input is decoded in the render pool: its fork server, resource tracker and workers.
    """
    response = httpx.post(
        f"{api.base}/mockup-api/v2/generation-tasks",
        headers=api.auth,
        json={
            "app_id": app_id,
            "style": "duotone",
            "number_images": images,
            "image_url": image_server.url("/photo.jpg"),
        },
    )
    assert response.status_code == 201
    deadline = time.monotonic() + 10
    while len(below := processes_below(api.process.pid)) < 4:
        assert time.monotonic() < deadline, below
        time.sleep(0.05)
    return below


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_it_stops_cleanly_on_sigterm_with_work_in_flight(mockup_api_process, image_server):
    with mockup_api_process(MOCKUP_API_STEP_SECONDS="0.5") as api:
        below = start_rendering(api, image_server, "live-stop", images=4)
        time.sleep(0.3)  # the jobs are mid-step now
        api.process.send_signal(signal.SIGTERM)
        assert api.process.wait(10) == 0
    # The workers were reaped before the server ended; the fork server and the resource
    # tracker end right after it (and are left to init).
    deadline = time.monotonic() + 5
    while running := [pid for pid in below if (stat(pid) or ("Z",))[0] != "Z"]:
        assert time.monotonic() < deadline, f"still running: {running}"
        time.sleep(0.05)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_its_render_workers_end_when_it_is_killed(mockup_api_process, image_server):
    with mockup_api_process() as api:
        below = start_rendering(api, image_server, "live-kill", images=1)
        api.process.kill()  # no shutdown: nobody tells the workers
        api.process.wait(10)
    deadline = time.monotonic() + 5
    while running := [pid for pid in below if (stat(pid) or ("Z",))[0] != "Z"]:
        assert time.monotonic() < deadline, f"still running: {running}"
        time.sleep(0.05)
