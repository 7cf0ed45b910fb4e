"""Upstream failures: failed renders, refused submissions, and an upstream that is down."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests.upstream_helpers import (
    Booth,
    answering,
    contract_problems,
    fresh_var_dir,
    read_tasks,
    serve,
    wait_for,
)


@pytest.fixture
def var_dir(tmp_path):
    return fresh_var_dir(tmp_path / "var")


def test_when_every_render_fails_the_jobs_fail_and_then_the_task(var_dir):
    knobs = {"MOCKUP_API_STEP_SECONDS": "0.01", "MOCKUP_API_FAILURE_RATE": "1.0"}
    with serve(var_dir, **knobs) as server:
        booth = Booth(server.base, "unlucky")
        upload = booth.upload()
        generation = booth.generation(upload, number_images=3)
        mockup = booth.mockup(upload, [7100, 7101], client_app_id="unlucky-shop")
        finished = [booth.wait_for_task(t["taskId"]) for t in (generation, mockup)]
        events = [booth.events(task) for task in finished]

    for task, log in zip(finished, events, strict=True):
        assert task["status"] == "failed", task
        assert not contract_problems(task, log), contract_problems(task, log)
        assert all(job["status"] == "failed" for job in task["jobs"]), task["jobs"]
        assert all(job["result"] is None for job in task["jobs"])
    generation_log, mockup_log = events
    job_failures = [e for e in generation_log if e["type"] == "jobFailed"]
    assert sorted(e["jobIndex"] for e in job_failures) == [0, 1, 2]
    assert {e["errorCode"] for e in job_failures} == {"render_failed"}
    failed = generation_log[-1]
    assert (failed["type"], failed["stage"], failed["errorCode"]) == (
        "failed",
        "render",
        "render_failed",
    )
    # A mockup task fails as a whole: the upstream reports it in one webhook.
    assert [e["type"] for e in mockup_log] == ["queued", "failed"]
    assert (mockup_log[-1]["stage"], mockup_log[-1]["errorCode"]) == ("render", "mockup_failed")


def test_a_refused_submission_fails_the_task_at_once_without_retrying(var_dir):
    with answering(400) as upstream, serve(var_dir, MOCKUP_API_URL=upstream.base) as server:
        booth = Booth(server.base, "refused")
        task = booth.generation(booth.upload(), number_images=2)
        finished = booth.wait_for_task(task["taskId"])
        events = booth.events(finished)
        posts = upstream.posts()

    assert finished["status"] == "failed" and finished["upstreamId"] is None
    assert not contract_problems(finished, events), contract_problems(finished, events)
    assert [e["type"] for e in events] == ["queued", "failed"]
    assert (events[-1]["stage"], events[-1]["errorCode"]) == ("submit", "upstream_rejected")
    assert "400" in events[-1]["message"]
    assert posts == 1
    assert read_tasks(var_dir)[task["taskId"]]["attempts"] == 0


def test_an_upstream_answering_500_is_retried_until_the_breaker_holds_the_queue(var_dir):
    with answering(500) as upstream, serve(var_dir, MOCKUP_API_URL=upstream.base) as server:
        booth = Booth(server.base, "down")
        upload = booth.upload()
        created = [booth.enhancement(uploadId=upload) for _ in range(3)]
        ids = [task["taskId"] for task in created]

        def retried() -> bool:
            attempts = sorted(read_tasks(var_dir)[i]["attempts"] for i in ids)
            return attempts[0] >= 1 and attempts[-1] >= 2

        # The catalog read, 3 submissions and a retry: the 5 failures in a row that open it.
        wait_for(retried, "every submission to fail, and one to be retried")
        assert upstream.posts() >= 4
        # Every retry is due within 4 s (attempt 2's full-jitter cap); the breaker, open for
        # 10 s, holds them all: no new submission reaches the upstream meanwhile.
        posts = upstream.posts()
        rows = read_tasks(var_dir)
        due = max(_moment(rows[i]["next_attempt_at"]) for i in ids)
        time.sleep(max(0.0, due - time.time()) + 1.0)
        assert upstream.posts() == posts

        rows = read_tasks(var_dir)
        tasks = [booth.task(i) for i in ids]
    assert [t["status"] for t in tasks] == ["queued"] * 3
    assert all(t["upstreamId"] is None for t in tasks)
    assert 3 <= sum(rows[i]["attempts"] for i in ids) < 3 * 4  # retried, none given up
    assert all("500" in rows[i]["last_error"] or "circuit" in rows[i]["last_error"] for i in ids)


def test_an_upstream_answering_garbage_is_a_transient_failure_not_the_end_of_the_queue(var_dir):
    # A proxy's HTML page with a 200: first seen by the catalog read at start-up.
    page = b"<html><body>Service temporarily unavailable</body></html>"
    with answering(200, page) as upstream, serve(var_dir, MOCKUP_API_URL=upstream.base) as server:
        booth = Booth(server.base, "garbage")
        task = booth.enhancement(uploadId=booth.upload())
        wait_for(
            lambda: read_tasks(var_dir)[task["taskId"]]["attempts"] >= 1,
            "the submission to be tried and scheduled again",
        )
        row = read_tasks(var_dir)[task["taskId"]]
        assert booth.task(task["taskId"])["status"] == "queued"
    assert "not JSON" in row["last_error"], row
    assert upstream.posts() >= 1


def _moment(stored: str) -> float:
    """Return a datetime column of SQLite (UTC, as Django stores it) as a Unix time."""
    return datetime.fromisoformat(stored).replace(tzinfo=UTC).timestamp()
