"""Cancelling a task while it waits in our queue, and while the upstream works on it."""

from __future__ import annotations

import time

import pytest

from tests.live import free_port
from tests.upstream_helpers import (
    Booth,
    UpstreamView,
    contract_problems,
    derived_api_key,
    fresh_var_dir,
    read_tasks,
    serve,
    wait_for,
)


@pytest.fixture
def var_dir(tmp_path):
    return fresh_var_dir(tmp_path / "var")


def test_a_task_cancelled_in_the_queue_never_reaches_the_upstream(var_dir):
    port = free_port()
    # A web-only server (no worker): the task stays queued as long as we like.
    with serve(var_dir, port=port, worker=False) as server:
        booth = Booth(server.base, "queued")
        upload = booth.upload()
        task = booth.generation(upload, number_images=2)
        outcome = booth.cancel(task["taskId"])
        assert (outcome["status"], outcome["didCancel"]) == ("cancelled", True)
        assert (outcome["completedJobs"], outcome["totalJobs"]) == (0, 2)

    # The same var dir with the queue running: a later task is dispatched, the cancelled not.
    with serve(var_dir, port=port, MOCKUP_API_STEP_SECONDS="0.01") as server:
        booth.reconnect()
        later = booth.enhancement(uploadId=upload)
        assert booth.wait_for_task(later["taskId"])["status"] == "completed"
        cancelled = booth.task(task["taskId"])
        events = booth.events(cancelled)

    assert cancelled["status"] == "cancelled" and cancelled["upstreamId"] is None
    assert [job["status"] for job in cancelled["jobs"]] == ["cancelled", "cancelled"]
    assert [(e["type"], e.get("reason")) for e in events] == [
        ("queued", None),
        ("cancelled", "user"),
    ]
    row = read_tasks(var_dir)[task["taskId"]]
    assert (row["upstream_id"], row["claimed_at"], row["attempts"]) == (None, None, 0)


def test_a_running_task_cancelled_stops_upstream_and_reports_nothing_more(var_dir):
    with serve(var_dir, MOCKUP_API_STEP_SECONDS="0.5") as server:
        upstream = UpstreamView(f"{server.base}/mockup-api", derived_api_key())
        booth = Booth(server.base, "running")
        upload = booth.upload()
        generation = booth.generation(upload, number_images=4)
        mockup = booth.mockup(upload, [7100, 7101, 7102], client_app_id="running-shop")
        booth.wait_for_event(generation, lambda e: e["type"] == "started")
        running_mockup = booth.wait_for_task(mockup["taskId"], ("running",))

        for task in (generation, mockup):
            outcome = booth.cancel(task["taskId"])
            assert (outcome["status"], outcome["didCancel"]) == ("cancelled", True)
            assert outcome["completedJobs"] == 0

        upstream_id = booth.task(generation["taskId"])["upstreamId"]
        upstream_task = wait_for(
            lambda: (data := upstream.generation(upstream_id))["status"] == "cancelled" and data,
            "the upstream to cancel the generation",
        )
        assert {job["status"] for job in upstream_task["jobs"]} == {"cancelled"}
        # Mockups cannot be cancelled upstream: it finishes, and its result is ignored.
        wait_for(
            lambda: upstream.mockup(running_mockup["upstreamId"])["status"] == "completed",
            "the upstream to finish the mockup",
        )
        time.sleep(1.0)  # two render steps: room for any late report to (wrongly) land

        for task in (generation, mockup):
            final = booth.task(task["taskId"])
            events = booth.events(final)
            assert final["status"] == "cancelled" and final["cancelReason"] == "user"
            assert not contract_problems(final, events), contract_problems(final, events)
            assert events[-1]["type"] == "cancelled"
            assert "jobCompleted" not in [e["type"] for e in events]
            assert all(job["status"] == "cancelled" for job in final["jobs"]), final["jobs"]
            assert all(job["result"] is None for job in final["jobs"])
