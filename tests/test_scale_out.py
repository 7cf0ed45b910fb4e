"""Several processes on PostgreSQL and Redis keep the promises of one (contract section 7,
"Restarts"): workers killed at random moments, web processes restarted under open streams,
Redis stopped mid-run. Every part is a real process (tests/deployment.py); the counts are exact.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.deployment import TEST_LEASE, Deployment, deployment
from tests.live import SSEReader, free_port
from tests.upstream_helpers import Booth, contract_problems

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.deployment]

RENDER = {"MOCKUP_API_STEP_SECONDS": "0.05"}
FINISH_TIMEOUT = 180.0
KILLS = 12


class StreamRecorder:
    """Follow the session's SSE stream in a thread, resuming from the last id after any drop.

    Keeps every event received, in order, so a test can count losses and repeats.
    """

    def __init__(self, booth: Booth, base: str | None = None) -> None:
        self.base = base or booth.base
        self.headers = dict(booth.http.headers)
        self.events: list[dict[str, Any]] = []
        # From the session's head before the test creates anything: nothing may be missed.
        self.last_id: str | None = booth.http.get("/api/events").json()["cursor"]
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StreamRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            headers = dict(self.headers)
            if self.last_id:
                headers["Last-Event-ID"] = self.last_id
            try:
                timeout = httpx.Timeout(5.0, read=3.0)
                with httpx.stream("GET", f"{self.base}/progress/session", headers=headers,
                                  timeout=timeout) as response:  # fmt: skip
                    if response.status_code != 200:
                        time.sleep(0.2)
                        continue
                    reader = SSEReader(response)
                    while not self._stop.is_set():
                        event = reader.event()
                        self.last_id = event["_sse"].get("id") or self.last_id
                        if event["type"] != "connected":  # resets are kept: they count
                            self.events.append(event)
            except (httpx.HTTPError, EOFError):
                pass
            self.reconnects += 1
            time.sleep(0.1)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)


def stream_problems(recorded: list[dict], stored: list[dict]) -> list[str]:
    """Compare what a stream delivered with the log: nothing lost, repeated or reset."""
    problems = []
    resets = [e for e in recorded if e["type"] == "reset"]
    if resets:
        problems.append(f"{len(resets)} reset event(s)")
    ids = [e["id"] for e in recorded if e["type"] != "reset"]
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    if repeated:
        problems.append(f"repeated: {repeated[:10]}")
    lost = [e["id"] for e in stored if e["id"] not in set(ids)]
    if lost:
        problems.append(f"lost {len(lost)}: {lost[:10]}")
    return problems


def stored_events(booth: Booth) -> list[dict]:
    """Every event of the booth's session, read from the log from the start."""
    cursor, found = None, []
    while True:
        params = {"after": cursor} if cursor else {}
        page = booth.http.get("/api/events", params=params).json()
        found += page["events"]
        if not page["events"]:
            return found
        cursor = page["cursor"]


def create_mixed(booth: Booth, upload: str, n: int) -> dict[str, Any]:
    """Create the n-th task of a mix of kinds; each generation on a client of its own, since
    a new generation replaces the same client's unfinished one."""
    kind = n % 4
    if kind == 0:
        return booth.generation(upload, number_images=2, client_app_id=f"gen-{n}")
    if kind == 1:
        return booth.enhancement(f"enh-{n}", uploadId=upload)
    if kind == 2:
        return booth.mockup(upload, [7100 + n % 10], client_app_id=f"shop-{n}")
    return booth.generation(upload, number_images=1, client_app_id=f"gen-{n}")


def wait_all(booth: Booth, task_ids: list[str], setup: Deployment) -> list[dict]:
    deadline = time.monotonic() + FINISH_TIMEOUT
    finished: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for task_id in task_ids:
            if task_id not in finished:
                task = booth.task(task_id)
                if task["status"] in ("completed", "failed", "cancelled"):
                    finished[task_id] = task
        if len(finished) == len(task_ids):
            return [finished[t] for t in task_ids]
        time.sleep(0.3)
    stuck = [t for t in task_ids if t not in finished]
    rows = setup.sql(
        "SELECT id, status, claimed_by_id, claim_epoch, upstream_id, attempts, last_error"
        " FROM jobs_app_task WHERE id = ANY(%s::uuid[])",
        stuck,
    )
    workers = setup.sql("SELECT id, name, lease_expires_at, now() FROM jobs_app_worker")
    pytest.fail(f"{len(stuck)} task(s) never finished: {rows}\nworkers: {workers}\n"
                f"{setup.logs()}")  # fmt: skip


def exactly_once_problems(setup: Deployment, task_ids: list[str]) -> list[str]:
    created = setup.upstream_stats()["createdByKey"]
    return [f"task {t} created upstream {created.get(t, 0)} times"
            for t in task_ids if created.get(t, 0) != 1]  # fmt: skip


def test_workers_killed_at_random_moments_lose_nothing_and_submit_each_task_once(tmp_path):
    seed = int(os.environ.get("KILL_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    kills: list[str] = []
    with deployment(tmp_path, workers=2, **RENDER) as (setup, _):
        booth = Booth(setup.base, "kill-booth")
        upload = booth.upload()
        done = threading.Event()

        def chaos() -> None:
            # Kill a random worker every 0.5-2 s, 12 times; replace it at once or after a
            # pause (then the survivor must take its tasks over when the lease runs out).
            while len(kills) < KILLS:
                time.sleep(rng.uniform(0.5, 2.0))
                alive = [w for w in setup.workers if w.alive]
                if not alive:
                    setup.start_worker()
                    continue
                victim = rng.choice(alive)
                victim.kill()
                kills.append(f"{victim.process.pid}@{time.monotonic():.1f}")
                if rng.random() < 0.6 or len(alive) == 1:
                    time.sleep(rng.uniform(0, 1.5))
                    setup.start_worker()
            if not any(w.alive for w in setup.workers):
                setup.start_worker()

        with StreamRecorder(booth) as stream:
            killer = threading.Thread(target=chaos, daemon=True)
            killer.start()
            task_ids = []
            for n in range(40):
                task_ids.append(create_mixed(booth, upload, n)["taskId"])
                time.sleep(rng.uniform(0, 0.3))
            finished = wait_all(booth, task_ids, setup)
            done.set()
            killer.join(60)
            stored = stored_events(booth)
            stream.wait_for(len(stored))
        problems = [p for t in finished for p in contract_problems(t, booth.events(t))]
        problems += exactly_once_problems(setup, task_ids)
        problems += stream_problems(stream.events, stored)
        statuses = Counter(t["status"] for t in finished)
        failed = [(t["taskId"], t.get("error")) for t in finished if t["status"] != "completed"]
        logs = setup.logs() if failed or problems else ""

    assert len(kills) >= 10, kills
    assert statuses == {"completed": 40}, (seed, statuses, failed, logs)
    assert not problems, (seed, problems, logs)


def test_restarting_a_web_process_and_stopping_a_worker_mid_run_loses_nothing(tmp_path):
    port = free_port()
    with deployment(tmp_path, workers=2, web_ports=[port], **RENDER) as (setup, _):
        booth = Booth(setup.base, "restart-booth")
        upload = booth.upload()
        with StreamRecorder(booth) as stream:
            task_ids = [create_mixed(booth, upload, n)["taskId"] for n in range(12)]
            stream.wait_for(12)
            # The web process dies under the open stream and comes back on its port.
            web = setup.webs.pop()
            web.kill()
            setup.start_web(port)
            # One worker stops as systemd stops it (SIGTERM): its claims are freed at once.
            setup.workers[0].stop()
            task_ids += [create_mixed(booth, upload, n)["taskId"] for n in range(12, 20)]
            finished = wait_all(booth, task_ids, setup)
            stored = stored_events(booth)
            stream.wait_for(len(stored))
        problems = stream_problems(stream.events, stored)
        problems += exactly_once_problems(setup, task_ids)
        statuses = Counter(t["status"] for t in finished)
        logs = setup.logs() if problems or statuses != {"completed": 20} else ""

    assert stream.reconnects >= 1
    assert statuses == {"completed": 20}, (statuses, logs)
    assert not problems, (problems, logs)


def test_redis_stopped_for_ten_seconds_mid_run_fails_no_task_and_loses_no_event(tmp_path):
    with deployment(tmp_path, workers=1, MOCKUP_API_STEP_SECONDS="0.3") as (setup, redis):
        booth = Booth(setup.base, "redis-booth")
        upload = booth.upload()
        with StreamRecorder(booth) as stream:
            task_ids = [create_mixed(booth, upload, n)["taskId"] for n in range(8)]
            stream.wait_for(8)
            redis.stop()
            time.sleep(10)
            redis.start()
            finished = wait_all(booth, task_ids, setup)
            stored = stored_events(booth)
            stream.wait_for(len(stored), timeout=60)
        problems = stream_problems(stream.events, stored)
        problems += exactly_once_problems(setup, task_ids)
        statuses = Counter(t["status"] for t in finished)
        failed = [(t["taskId"], t.get("error")) for t in finished if t["status"] != "completed"]
        logs = setup.logs() if problems or failed else ""

    assert statuses == {"completed": 8}, (failed, logs)
    assert not problems, (problems, json.dumps(stream.events[-3:]), logs)


def test_a_worker_paused_past_its_lease_is_fenced_and_every_task_is_created_once(tmp_path):
    """SIGSTOP a worker holding claims (waiting on a tight upstream rate limit) for longer than
    its lease: another worker takes its tasks over; when the first resumes, its writes are
    fenced, its late POSTs are answered by the idempotency key, and it takes a fresh identity."""
    tight = {"MOCKUP_API_RATE_LIMIT": "4", "MOCKUP_API_RATE_WINDOW_SECONDS": "2"}
    with deployment(tmp_path, workers=1, **tight, **RENDER) as (setup, _):
        booth = Booth(setup.base, "pause-booth")
        upload = booth.upload()
        task_ids = [create_mixed(booth, upload, n)["taskId"] for n in range(10)]
        time.sleep(1.0)  # the worker claims tasks; most wait on the rate limiter
        paused = setup.workers[0]
        paused.process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(float(TEST_LEASE["WORKER_LEASE_SECONDS"]) + 2)
            setup.start_worker()
            time.sleep(3)
        finally:
            paused.process.send_signal(signal.SIGCONT)
        finished = wait_all(booth, task_ids, setup)
        # The resumed worker's submissions wake on its rate limiter; the new worker may have
        # finished every task before they try to record anything: give them time to be fenced.
        deadline = time.monotonic() + 30
        while "outcome=fenced" not in paused.tail(200_000) and time.monotonic() < deadline:
            time.sleep(0.2)
        problems = exactly_once_problems(setup, task_ids)
        problems += [p for t in finished for p in contract_problems(t, booth.events(t))]
        statuses = Counter(t["status"] for t in finished)
        paused_log = paused.tail(200_000)
        logs = setup.logs() if problems or statuses != {"completed": 10} else ""

    assert statuses == {"completed": 10}, (statuses, logs)
    assert not problems, (problems, logs)
    assert "worker_lease_lost" in paused_log, paused_log[-3000:]
    # Its submissions that resumed after the takeover wrote nothing.
    assert "claim_fenced" in paused_log and "outcome=fenced" in paused_log, paused_log[-3000:]
