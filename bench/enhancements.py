"""Create enhancement tasks against a running server and follow them to their end.

Shared by bench/upstream.py (one `serve` process) and bench/scale_out.py (a deployment): one
client thread posts the tasks as fast as it can while a long-polling client reads the events;
each task's latency runs from its creation to its terminal event.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EnhancementRun:
    tasks: int
    finished: int
    completed: int
    seconds: float  # first POST to the last terminal event
    create_seconds: float  # first POST to the last POST's answer
    latencies: list[float]  # creation to terminal event, sorted

    @property
    def tasks_per_second(self) -> float:
        return self.finished / self.seconds

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        if fraction == 0.5:
            return statistics.median(self.latencies)
        return self.latencies[int(fraction * (len(self.latencies) - 1))]


def run_enhancements(base: str, tasks: int, timeout: float = 300) -> EnhancementRun:
    """Post `tasks` enhancement tasks to `base` and follow them; return the timings."""
    import httpx

    from tests.conftest import image_bytes

    api = httpx.Client(base_url=base, timeout=60)
    api.headers["Authorization"] = "Bearer " + api.post("/api/sessions").json()["token"]
    upload = api.post("/api/uploads", files={"image": ("a.jpg", image_bytes(), "image/jpeg")})
    upload_id = upload.json()["uploadId"]
    cursor = api.get("/api/events").json()["cursor"]
    created_at: dict[str, float] = {}
    started = time.perf_counter()

    def create_all() -> None:
        client = httpx.Client(base_url=base, timeout=60, headers=dict(api.headers))
        for n in range(tasks):
            body = {"clientAppId": f"e2e-{n % 10}", "kind": "enhancement", "uploadId": upload_id}
            response = client.post("/api/tasks", json=body)
            response.raise_for_status()
            created_at[response.json()["taskId"]] = time.perf_counter()

    creator = threading.Thread(target=create_all)
    creator.start()
    done: dict[str, float] = {}
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(done) < tasks and time.monotonic() < deadline:
        page = api.get("/api/events", params={"after": cursor, "wait": 5}).json()
        cursor = page["cursor"]
        for event in page["events"]:
            if event["type"] in ("completed", "failed", "cancelled"):
                done[event["taskId"]] = time.perf_counter()
                statuses[event["taskId"]] = event["type"]
    elapsed = time.perf_counter() - started
    creator.join()
    return EnhancementRun(
        tasks=tasks,
        finished=len(done),
        completed=sum(1 for s in statuses.values() if s == "completed"),
        seconds=elapsed,
        create_seconds=max(created_at.values(), default=started) - started,
        latencies=sorted(done[t] - created_at[t] for t in done if t in created_at),
    )
