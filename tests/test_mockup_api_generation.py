"""Generation and enhancement tasks of the built-in mockup API, watched over the event socket."""

from __future__ import annotations

import io
from collections import defaultdict

import pytest
from PIL import Image

from mockup_api.store import store

pytest_plugins = ["tests.mockup_fixtures"]


def is_task_completed(message: dict) -> bool:
    return message.get("type") == "taskCompleted"


def per_job(messages: list[dict]) -> dict[int, list[dict]]:
    """Group the job messages by job index, in arrival order."""
    jobs: dict[int, list[dict]] = defaultdict(list)
    for message in messages:
        if "jobIndex" in message:
            jobs[message["jobIndex"]].append(message)
    return jobs


def label(message: dict) -> str:
    """Name a job message for order checks: queued, initiating, started, p<step>, preview..."""
    kind = message["type"]
    if kind == "jobState":
        return message["state"]
    if kind == "jobProgress":
        return f"p{message['step']}"
    return {"jobPreview": "preview", "jobResult": "result", "jobError": "error"}[kind]


def labels(messages: list[dict]) -> list[str]:
    """Return the labels, with repeated queue-position updates folded into one `queued`."""
    out: list[str] = []
    for message in messages:
        name = label(message)
        if not (name == "queued" and out and out[-1] == "queued"):
            out.append(name)
    return out


class TestGeneration:
    async def test_each_job_streams_its_states_in_order_then_the_task_completes(
        self, mockup_api, image_server
    ):
        socket = await mockup_api.socket("booth")
        task = await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=3)
        messages = await socket.receive_until(is_task_completed)

        assert messages[-1] == {
            "type": "taskCompleted",
            "taskId": task["id"],
            "status": "completed",
        }
        jobs = per_job(messages)
        assert sorted(jobs) == [0, 1, 2]
        for index, job_messages in jobs.items():
            expected = ["queued", "initiating", "started", "p1", "p2", "preview", "p3", "p4"]
            assert labels(job_messages) == [*expected, "result"], index
            assert {m["jobId"] for m in job_messages} == {task["jobs"][index]["id"]}
            assert all(m["taskId"] == task["id"] for m in job_messages)
            assert job_messages[0]["queuePosition"] >= 1
            initiating = next(m for m in job_messages if label(m) == "initiating")
            assert initiating["workerName"] in {"worker-1", "worker-2"}
            assert all(m["stepCount"] == 4 for m in job_messages if m["type"] == "jobProgress")
        assert await socket.nothing_more()

    async def test_the_task_object_shows_every_result(self, mockup_api, image_server):
        socket = await mockup_api.socket("booth")
        created = await mockup_api.create_generation(image_server.url("/photo.jpg"))
        messages = await socket.receive_until(is_task_completed)
        results = {m["jobIndex"]: m for m in messages if m["type"] == "jobResult"}

        task = await mockup_api.task(created["id"])
        assert task["status"] == "completed"
        assert task["finished_at"].endswith("Z")
        for job in task["jobs"]:
            assert job["status"] == "completed"
            assert job["progress"] == 1
            assert job["worker_name"].startswith("worker-")
            assert job["error"] is None
            assert job["preview_url"].startswith("http://testserver/mockup-api/v2/files/")
            result = results[job["index"]]
            assert job["result"] == {
                "url": result["url"],
                "width": result["width"],
                "height": result["height"],
                "content_type": "image/png",
            }

    async def test_results_are_real_pngs_of_the_announced_size(self, mockup_api, image_server):
        socket = await mockup_api.socket("booth")
        await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
        messages = await socket.receive_until(is_task_completed)
        result = next(m for m in messages if m["type"] == "jobResult")
        preview = next(m for m in messages if m["type"] == "jobPreview")

        response = await mockup_api.download(result["url"])
        assert response.status_code == 200
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "PNG"
        assert image.size == (result["width"], result["height"])
        assert max(image.size) == 768  # the longest side, whatever the input's size
        small = Image.open(io.BytesIO((await mockup_api.download(preview["url"])).content))
        assert max(small.size) <= 192

    async def test_an_enhancement_doubles_the_size(self, mockup_api, image_server):
        socket = await mockup_api.socket("booth")
        task = await mockup_api.create_generation(
            image_server.url("/photo.jpg"), kind="enhancement", style=None, number_images=5
        )
        assert task["kind"] == "enhancement"
        assert task["number_images"] == 1
        messages = await socket.receive_until(is_task_completed)
        result = next(m for m in messages if m["type"] == "jobResult")
        assert (result["width"], result["height"]) == (128, 96)
        image = Image.open(io.BytesIO((await mockup_api.download(result["url"])).content))
        assert image.size == (128, 96)

    async def test_the_same_seed_renders_the_same_image(self, mockup_api, image_server):
        socket = await mockup_api.socket("booth")
        urls = []
        for _ in range(2):
            await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
            messages = await socket.receive_until(is_task_completed)
            urls.append(next(m["url"] for m in messages if m["type"] == "jobResult"))
        first, second = [(await mockup_api.download(url)).content for url in urls]
        assert urls[0] != urls[1]
        assert first == second

    async def test_messages_go_only_to_the_tasks_app(self, mockup_api, image_server):
        mine = await mockup_api.socket("booth")
        other = await mockup_api.socket("kiosk")
        await mockup_api.create_generation(image_server.url("/photo.jpg"), app_id="booth")
        await mine.receive_until(is_task_completed)
        assert await other.nothing_more()


class TestQueue:
    async def test_one_worker_runs_jobs_one_after_another_and_moves_the_queue(
        self, mockup_api, image_server, settings
    ):
        settings.MOCKUP_API_WORKERS = 1
        socket = await mockup_api.socket("booth")
        await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=3)
        messages = await socket.receive_until(is_task_completed)

        order = [(m["jobIndex"], label(m)) for m in messages if "jobIndex" in m]
        finished = [i for i, (_, name) in enumerate(order) if name == "result"]
        started = [i for i, (_, name) in enumerate(order) if name == "initiating"]
        assert started[1] > finished[0] and started[2] > finished[1]
        positions = [m["queuePosition"] for m in per_job(messages)[2] if label(m) == "queued"]
        assert positions == [2, 1]
        assert {m["workerName"] for m in messages if m.get("workerName")} == {"worker-1"}

    async def test_tasks_of_every_app_share_one_fifo_queue(
        self, mockup_api, image_server, settings
    ):
        settings.MOCKUP_API_WORKERS = 1
        settings.MOCKUP_API_STEP_SECONDS = 0.05
        booth = await mockup_api.socket("booth")
        kiosk = await mockup_api.socket("kiosk")
        await mockup_api.create_generation(image_server.url("/photo.jpg"), app_id="booth")
        await booth.receive_until(lambda m: m.get("state") == "initiating")  # job 1 waits
        await mockup_api.create_generation(image_server.url("/photo.jpg"), app_id="kiosk")
        messages = await kiosk.receive_until(is_task_completed)
        first_positions = [per_job(messages)[n][0]["queuePosition"] for n in (0, 1)]
        assert first_positions == [2, 3]  # behind the booth's waiting job, not a queue of its own


class TestCancel:
    async def test_cancelling_mid_task_stops_every_job_and_delivers_no_result(
        self, mockup_api, image_server, settings
    ):
        settings.MOCKUP_API_STEP_SECONDS = 0.05
        settings.MOCKUP_API_STEPS = 6
        settings.MOCKUP_API_WORKERS = 1
        socket = await mockup_api.socket("booth")
        task = await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=2)
        before = await socket.receive_until(lambda m: m.get("type") == "jobProgress")

        response = await mockup_api.delete(f"/mockup-api/v2/generation-tasks/{task['id']}")
        assert response.status_code == 200
        cancelled = response.json()["data"]
        assert cancelled["status"] == "cancelled"
        assert cancelled["finished_at"] is not None
        assert {job["status"] for job in cancelled["jobs"]} == {"cancelled"}

        after = await socket.receive_until(is_task_completed)
        assert after[-1]["status"] == "cancelled"
        assert await socket.nothing_more(0.5)  # longer than the steps: the worker has stopped
        assert not [m for m in before + after if m["type"] in ("jobResult", "jobError")]
        assert (await mockup_api.task(task["id"]))["jobs"] == cancelled["jobs"]

    async def test_cancelling_again_or_after_the_end_changes_nothing(
        self, mockup_api, image_server
    ):
        socket = await mockup_api.socket("booth")
        task = await mockup_api.create_generation(image_server.url("/photo.jpg"))
        await socket.receive_until(is_task_completed)
        path = f"/mockup-api/v2/generation-tasks/{task['id']}"
        for _ in range(2):
            response = await mockup_api.delete(path)
            assert response.status_code == 200
            assert response.json()["data"]["status"] == "completed"
        assert await socket.nothing_more()

    async def test_a_cancelled_queued_task_never_starts(self, mockup_api, image_server, settings):
        settings.MOCKUP_API_STEP_SECONDS = 0.05
        settings.MOCKUP_API_WORKERS = 1
        socket = await mockup_api.socket("booth")
        busy = await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
        # Busy holds the one render slot before the other arrives: the two input downloads
        # run side by side, and the second could otherwise reach the render queue first.
        await socket.receive_until(lambda m: m.get("taskId") == busy["id"]
                                   and m.get("state") == "started")  # fmt: skip
        waiting = await mockup_api.create_generation(image_server.url("/photo.jpg"))
        await socket.receive_until(lambda m: m.get("taskId") == waiting["id"])
        await mockup_api.delete(f"/mockup-api/v2/generation-tasks/{waiting['id']}")
        messages = await socket.receive_until(
            lambda m: is_task_completed(m) and m["taskId"] == busy["id"]
        )
        of_waiting = [m for m in messages if m.get("taskId") == waiting["id"]]
        assert {m.get("state") for m in of_waiting} <= {"queued", None}  # never initiating
        stored = await mockup_api.task(waiting["id"])
        assert stored["status"] == "cancelled"
        assert [job["status"] for job in stored["jobs"]] == ["cancelled", "cancelled"]


class TestFailures:
    async def test_failure_rate_one_fails_every_job_and_the_task(
        self, mockup_api, image_server, settings
    ):
        settings.MOCKUP_API_FAILURE_RATE = 1.0
        socket = await mockup_api.socket("booth")
        task = await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=2)
        messages = await socket.receive_until(is_task_completed)

        errors = [m for m in messages if m["type"] == "jobError"]
        assert sorted(m["jobIndex"] for m in errors) == [0, 1]
        assert {m["code"] for m in errors} == {"render_failed"}
        assert all(m["message"] for m in errors)
        assert not [m for m in messages if m["type"] in ("jobResult", "jobPreview")]
        assert messages[-1]["status"] == "failed"
        stored = await mockup_api.task(task["id"])
        assert stored["status"] == "failed"
        assert {job["error"]["code"] for job in stored["jobs"]} == {"render_failed"}

    @pytest.mark.parametrize("path", ["/missing.jpg", "/not-an-image.jpg"])
    async def test_an_input_that_cannot_be_had_fails_every_job(
        self, mockup_api, image_server, path
    ):
        image_server.serve("/not-an-image.jpg", b"hello")
        socket = await mockup_api.socket("booth")
        task = await mockup_api.create_generation(image_server.url(path), number_images=2)
        messages = await socket.receive_until(is_task_completed)

        errors = [m for m in messages if m["type"] == "jobError"]
        assert {m["code"] for m in errors} == {"input_unavailable"}
        assert len(errors) == 2
        assert messages[-1] == {"type": "taskCompleted", "taskId": task["id"], "status": "failed"}

    async def test_an_input_over_the_size_limit_is_unavailable(
        self, mockup_api, image_server, monkeypatch
    ):
        from mockup_api import fetch

        monkeypatch.setattr(fetch, "MAX_BYTES", 100)
        socket = await mockup_api.socket("booth")
        await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
        messages = await socket.receive_until(is_task_completed)
        error = next(m for m in messages if m["type"] == "jobError")
        assert error["code"] == "input_unavailable"
        assert "bytes" in error["message"]

    async def test_it_follows_redirects_within_the_inputs_origin_only(
        self, mockup_api, image_server
    ):
        image_server.serve("/moved.jpg", status=302, headers={"Location": "/photo.jpg"})
        image_server.serve("/away.jpg", status=302, headers={"Location": "http://localhost:9/x"})
        moved = await mockup_api.create_generation(image_server.url("/moved.jpg"), number_images=1)
        away = await mockup_api.create_generation(image_server.url("/away.jpg"), number_images=1)
        assert (await mockup_api.wait_for_task(moved["id"]))["status"] == "completed"
        failed = await mockup_api.wait_for_task(away["id"])
        assert failed["jobs"][0]["error"]["code"] == "input_unavailable"
        assert "another host" in failed["jobs"][0]["error"]["message"]

    async def test_the_task_runs_on_when_nobody_listens(self, mockup_api, image_server):
        task = await mockup_api.create_generation(image_server.url("/photo.jpg"))
        socket = await mockup_api.socket("booth")
        await socket.receive_until(is_task_completed)
        assert store.generation[task["id"]].status == "completed"
