"""Benchmarks of the upstream side: queue overhead, webhook ingest rate, end-to-end tasks/s.

    .venv/bin/python bench/upstream.py [--tasks 200] [--webhooks 2000] [--e2e-tasks 100]
                                       [--database-url postgresql://postgres@127.0.0.1/bench]

Prints one table. Not a test: figures depend on the machine (see docs/performance.md).
- queue overhead: our own bookkeeping per task with no upstream (create, claim, submit, job
  states, result, completion: every transaction and event), in one process.
- webhook ingest: signed deliveries over real HTTP to a daphne server (web only), verified
  and stored (workers apply them; bench/scale_out.py measures ingest with wrk), concurrency 8.
- end to end: enhancement tasks posted one after another (one client thread) to `manage.py
  serve` with the built-in mockup API at render time 0 (MOCKUP_API_STEP_SECONDS=0): tasks per
  second from the first POST to the last terminal event, and the latency from each task's
  creation to its terminal event, seen by a long-polling client.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WEBHOOK_SECRET = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OWFi"


def queue_overhead(tasks: int) -> dict[str, float]:
    """Run N tasks through every action of their life, with the upstream left out."""
    import django
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from PIL import Image

    from jobs_app import claims, leases, progress
    from jobs_app.actions import TaskRequest, check_create_task
    from jobs_app.files import store_result
    from jobs_app.states import TaskKind
    from jobs_app.uploads import do_store_upload
    from sessions_app.actions import do_start_session

    session = do_start_session().session
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(buffer, "PNG")
    png = buffer.getvalue()
    upload = do_store_upload(session, SimpleUploadedFile("p.png", png))
    result = store_result(png)
    worker = leases.WorkerIdentity(id=leases.new_worker_id(), name="bench")
    leases.register_worker(worker)
    # As in a server: events are announced on a running loop, not one made per event.
    from bench.publisher import start_announce_loop

    start_announce_loop()
    started, cpu_started = time.perf_counter(), time.process_time()
    for n in range(tasks):
        request = TaskRequest(client_app_id=f"bench-{n % 20}", kind=TaskKind.ENHANCEMENT,
                              upload_id=upload.pk)  # fmt: skip
        task = check_create_task(session, request).task
        claim = claims.claim_next(worker.id)
        assert claim is not None
        progress.do_mark_submitted(claim, f"up-{n}", {0: f"job-{n}"})
        progress.do_apply_job_state(claim.task_id, 0, "initiating", "w1")
        progress.do_apply_job_state(claim.task_id, 0, "started", "w1")
        progress.do_complete_job(claim.task_id, 0, result)
        assert task.pk is not None
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"tasks": tasks, "seconds": elapsed, "ms_per_task": 1000 * elapsed / tasks,
            "cpu_ms_per_task": 1000 * cpu / tasks}  # fmt: skip


def _sign(body: str) -> dict[str, str]:
    from standardwebhooks.webhooks import Webhook

    webhook_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(WEBHOOK_SECRET).sign(webhook_id, now, body),
        "Content-Type": "application/json",
    }


async def _ingest(base: str, bodies: list[str], concurrency: int) -> list[int]:
    import httpx

    statuses: list[int] = []
    queue: asyncio.Queue[str] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    async with httpx.AsyncClient(timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                response = await client.post(f"{base}/webhooks/mockup-api", content=body,
                                             headers=_sign(body))  # fmt: skip
                statuses.append(response.status_code)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def webhook_ingest(webhooks: int, env: dict[str, str]) -> dict[str, float]:
    """Post signed deliveries that each fail one job of a known task; measure the rate."""
    import httpx

    from tests.conftest import image_bytes
    from tests.live import daphne, migrate

    # Plain daphne: the web only, no worker (the tasks below are marked submitted by hand).
    migrate(env)
    with daphne(env) as base:
        api = httpx.Client(base_url=base, timeout=30)
        api.headers["Authorization"] = "Bearer " + api.post("/api/sessions").json()["token"]
        upload = api.post("/api/uploads", files={"image": ("a.jpg", image_bytes(), "image/jpeg")})
        upload_id = upload.json()["uploadId"]
        # Tasks with 16 jobs each, marked submitted through the server's database.
        task_ids = []
        for n in range(max(1, webhooks // 16)):
            body = {"clientAppId": f"ingest-{n}", "kind": "generation", "uploadId": upload_id,
                    "style": "comic", "numberImages": 16}  # fmt: skip
            task_ids.append(api.post("/api/tasks", json=body).json()["taskId"])
        _mark_submitted(env, task_ids)
        bodies = []
        for n in range(webhooks):
            task_index, job_index = divmod(n, 16)
            job = {"id": f"j{job_index}", "index": job_index, "status": "failed",
                   "error": {"code": "render_failed", "message": "bench"}}  # fmt: skip
            bodies.append(json.dumps({
                "type": "generation_job_progress", "timestamp": datetime.now(UTC).isoformat(),
                "data": {"id": f"bench-{task_index % len(task_ids)}", "status": "running",
                         "jobs": [job]},
            }))  # fmt: skip
        started = time.perf_counter()
        statuses = asyncio.run(_ingest(base, bodies, concurrency=8))
        elapsed = time.perf_counter() - started
    ok = sum(1 for status in statuses if status in (202, 204))
    return {"webhooks": webhooks, "accepted": ok, "seconds": elapsed, "per_second": ok / elapsed}


def _mark_submitted(env: dict[str, str], task_ids: list[str]) -> None:
    import subprocess

    script = (
        "import django, sys; django.setup();"
        "from jobs_app.models import Task;"
        "ids = sys.argv[1:];"
        "[Task.objects.filter(pk=t).update(status='running', upstream_id=f'bench-{i}')"
        " for i, t in enumerate(ids)]"
    )
    subprocess.run([sys.executable, "-c", script, *task_ids], cwd=ROOT, env=env, check=True)


def end_to_end(tasks: int, env: dict[str, str]) -> dict[str, float]:
    """Create enhancement tasks against `manage.py serve` at render time 0; time completion."""
    from bench.enhancements import run_enhancements
    from tests.live import daphne, migrate

    env = {**env, "MOCKUP_API_STEP_SECONDS": "0", "MOCKUP_API_RATE_LIMIT": "100000",
           "MOCKUP_API_WORKERS": "2"}  # fmt: skip
    migrate(env)
    with daphne(env, serve=True) as base:
        run = run_enhancements(base, tasks)
    return {
        "tasks": tasks,
        "finished": run.finished,
        "not_finished": tasks - run.finished,
        "create_seconds": run.create_seconds,
        "seconds": run.seconds,
        "tasks_per_second": run.tasks_per_second,
        "p50_latency_s": run.percentile(0.5),
        "p90_latency_s": run.percentile(0.9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="queue overhead: tasks")
    parser.add_argument("--webhooks", type=int, default=2000, help="webhook ingest: deliveries")
    parser.add_argument("--e2e-tasks", type=int, default=100, help="end to end: tasks")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="photobooth-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PHOTOBOOTH_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="photobooth.settings",
               WEBHOOK_SECRETS=WEBHOOK_SECRET, LOG_LEVEL="WARNING")  # fmt: skip
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    os.environ.update(env)

    rows = []
    overhead = queue_overhead(args.tasks)
    rows.append(("queue overhead", f"{overhead['ms_per_task']:.2f} ms/task",
                 f"{overhead['tasks']} tasks in {overhead['seconds']:.2f} s; CPU "
                 f"{overhead['cpu_ms_per_task']:.2f} ms/task (the rest waits on the "
                 f"database: commits)"))  # fmt: skip
    ingest = webhook_ingest(args.webhooks, env)
    rows.append(("webhook ingest", f"{ingest['per_second']:.0f} deliveries/s",
                 f"{ingest['accepted']}/{ingest['webhooks']} accepted in "
                 f"{ingest['seconds']:.2f} s"))  # fmt: skip
    e2e = end_to_end(args.e2e_tasks, env)
    rows.append(("end to end (render 0)", f"{e2e['tasks_per_second']:.1f} tasks/s",
                 f"{e2e['finished']}/{e2e['tasks']} finished in {e2e['seconds']:.2f} s "
                 f"(created in {e2e['create_seconds']:.2f} s); creation to terminal event "
                 f"p50 {e2e['p50_latency_s']:.2f} s, "
                 f"p90 {e2e['p90_latency_s']:.2f} s"))  # fmt: skip

    database = args.database_url.split("@")[-1] if args.database_url else "SQLite"
    print(f"\nPhotobooth upstream benchmarks ({database}, {os.cpu_count()} CPUs)\n")
    width = max(len(r[0]) for r in rows)
    for name, figure, detail in rows:
        print(f"  {name:<{width}}  {figure:>22}   {detail}")


if __name__ == "__main__":
    main()
