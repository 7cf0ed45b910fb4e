"""Benchmarks of a multi-process deployment: webhook ingest per web process, tasks/s by workers.

    .venv/bin/python bench/scale_out.py [--webhooks N] [--concurrency 32] [--seconds 10]
                                        [--generator auto|wrk|httpx] [--py-spy OUT]
                                        [--tasks 100] [--workers 1,2] [--only-ingest]

Every part is a real process on this machine (tests/deployment.py): a fresh PostgreSQL
database, a private Redis, the built-in mockup API served alone at render time 0
(MOCKUP_API_STEP_SECONDS=0), web processes (daphne) and workers. Prints one table. Not a test:
figures depend on the machine (see docs/performance.md).

- webhook ingest: signed deliveries (signed before the clock starts, each with its own
  webhook-id) posted over real HTTP to ONE web process, which verifies, stores, commits, rings
  the workers and answers; deliveries accepted per second. No worker runs, so nothing competes
  with the web process for the CPU. The load generator shares the machine, so it is chosen to
  cost as little CPU as possible: `wrk` (Debian package `wrk`) when installed, replaying the
  pre-signed requests from a file for `--seconds`; otherwise (or with `--generator httpx`) an
  asyncio httpx client posting `--webhooks` deliveries, which on two cores is itself a limit
  (about 5 ms of CPU per request). With wrk, `stored` exceeds `accepted` by the requests still
  in flight when wrk stops. Also printed: CPU per accepted delivery of the web process, of the
  load generator and of all PostgreSQL processes (other users of the server included), and how
  busy the whole machine was; `--wait-quiet` first waits for the machine to calm down.
- tasks/s: enhancement tasks created as fast as one client thread can, followed by a
  long-polling client; tasks per second from the first POST to the last terminal event, and
  each task's creation-to-terminal-event latency, with 1 and with 2 workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.streams import SERVICES, cpu_by_name, cpu_seconds, machine_cpu, wait_quiet  # noqa: E402

WEBHOOK_PATH = "/webhooks/mockup-api"
# Pre-signed deliveries per second of a wrk run: above what one web process can take, so the
# pool does not run out (if it does, the run says so rather than reuse ids, which would measure
# the cheaper duplicate path).
WRK_POOL_PER_SECOND = 3000
UPSTREAM_TASKS_MAX = 200  # tasks the deliveries are about (16 per task, cycled beyond that)

# Replays the requests of a file (records "<length>\n<raw HTTP request>") over wrk's
# connections: thread k of T sends records k, k+T, ... once each, then stops. Counts statuses
# per thread; done() prints one JSON line for the benchmark to read.
WRK_SCRIPT = r"""
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(args[2])
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  mine, statuses, exhausted = {}, {}, 0
  local pos, index = 1, 0
  while pos <= #data do
    local nl = string.find(data, "\n", pos, true)
    local len = tonumber(string.sub(data, pos, nl - 1))
    if index % nthreads == id then
      mine[#mine + 1] = string.sub(data, nl + 1, nl + len)
    end
    index = index + 1
    pos = nl + 1 + len
  end
  next_request = 1
end

function request()
  if next_request > #mine then
    exhausted = 1
    wrk.thread:stop()
    return wrk.format("GET", "/health")
  end
  local r = mine[next_request]
  next_request = next_request + 1
  return r
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local total, any_exhausted = {}, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
    any_exhausted = math.max(any_exhausted, t:get("exhausted"))
  end
  local parts = {}
  for k, v in pairs(total) do parts[#parts + 1] = string.format('"%s": %d', k, v) end
  local e = summary.errors
  io.write(string.format(
    '\nWRK_RESULT {"duration_us": %d, "requests": %d, "statuses": {%s}, "exhausted": %d, ' ..
    '"socket_errors": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.duration, summary.requests, table.concat(parts, ", "), any_exhausted,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def _signed_bodies(secret: str, count: int, upstream_ids: list[str]) -> list[tuple[bytes, dict]]:
    from standardwebhooks.webhooks import Webhook

    signer = Webhook(secret)
    out = []
    for n in range(count):
        task_index, job_index = divmod(n, 16)
        job = {"id": f"j{job_index}", "index": job_index, "status": "failed",
               "error": {"code": "render_failed", "message": "bench"}}  # fmt: skip
        body = json.dumps({
            "type": "generation_job_progress", "timestamp": datetime.now(UTC).isoformat(),
            "data": {"id": upstream_ids[task_index % len(upstream_ids)], "status": "running",
                     "jobs": [job]},
        })  # fmt: skip
        webhook_id = f"msg_{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(webhook_id, now, body),
            "Content-Type": "application/json",
        }
        out.append((body.encode(), headers))
    return out


async def _post_all(url: str, requests: list[tuple[bytes, dict]], concurrency: int) -> list[int]:
    import httpx

    statuses: list[int] = []
    position = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def sender() -> None:
            nonlocal position
            while position < len(requests):
                body, headers = requests[position]
                position += 1
                response = await client.post(url, content=body, headers=headers)
                statuses.append(response.status_code)

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return statuses


def _raw_request(base: str, body: bytes, headers: dict[str, str]) -> bytes:
    host = urlsplit(base).netloc
    fields = [f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    lines = [f"POST {WEBHOOK_PATH} HTTP/1.1", *fields, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _run_wrk(
    base: str, requests: list[tuple[bytes, dict]], *, concurrency: int, seconds: float,
    threads: int, folder: Path,
) -> dict:  # fmt: skip
    """Replay `requests` with wrk for `seconds`; return its WRK_RESULT figures."""
    folder.mkdir(parents=True, exist_ok=True)
    script, data = folder / "ingest.lua", folder / "requests.bin"
    script.write_text(WRK_SCRIPT)
    with data.open("wb") as out:
        for body, headers in requests:
            raw = _raw_request(base, body, headers)
            out.write(f"{len(raw)}\n".encode() + raw)
    duration = f"{max(1, round(seconds))}s"  # wrk takes whole seconds
    command = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", duration,
               "--timeout", "30s", "-s", str(script), base,
               "--", str(data), str(threads)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(x for x in run.stdout.splitlines() if x.startswith("WRK_RESULT "))
    return json.loads(line.removeprefix("WRK_RESULT "))


def _generator(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "httpx"
    if choice == "wrk" and not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    return choice


def webhook_ingest(
    tmp: Path, *, webhooks: int | None, concurrency: int, generator: str, seconds: float,
    wrk_threads: int = 1, py_spy: Path | None = None, wait_for_quiet: float = 0,
) -> dict:  # fmt: skip
    import httpx

    from tests.conftest import image_bytes
    from tests.deployment import deployment

    with deployment(tmp, webs=1, workers=0, LOG_LEVEL="WARNING") as (setup, _):
        api = httpx.Client(base_url=setup.base, timeout=30)
        api.headers["Authorization"] = "Bearer " + api.post("/api/sessions").json()["token"]
        upload = api.post("/api/uploads", files={"image": ("a.jpg", image_bytes(), "image/jpeg")})
        upload_id = upload.json()["uploadId"]
        if webhooks is None:
            webhooks = int(WRK_POOL_PER_SECOND * seconds) if generator == "wrk" else 5000
        upstream_ids = []
        for n in range(max(1, min(webhooks // 16, UPSTREAM_TASKS_MAX))):
            body = {"clientAppId": f"ingest-{n}", "kind": "generation", "uploadId": upload_id,
                    "style": "comic", "numberImages": 16}  # fmt: skip
            task_id = api.post("/api/tasks", json=body).json()["taskId"]
            upstream_ids.append(f"bench-{n}")
            setup.sql("UPDATE jobs_app_task SET status='running', upstream_id=%s WHERE id=%s",
                      f"bench-{n}", task_id)  # fmt: skip
        secret = setup.env["WEBHOOK_SECRETS"].split(",")[0]
        requests = _signed_bodies(secret, webhooks, upstream_ids)
        # Warm up the web process (connections, code paths) with a few deliveries first.
        warm = _signed_bodies(secret, 200, upstream_ids)
        asyncio.run(_post_all(f"{setup.base}{WEBHOOK_PATH}", warm, 8))
        result: dict = {"generator": generator, "concurrency": concurrency}
        if wait_for_quiet:
            result["busy_before"] = wait_quiet(wait_for_quiet)
        profiler = None
        if py_spy is not None:
            py_spy.parent.mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                 str(setup.webs[0].process.pid), "-d", str(int(seconds) if generator == "wrk"
                 else 15), "-f", "raw", "--threads", "--gil", "-o", str(py_spy)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)  # py-spy attaches
        web_pid = setup.webs[0].process.pid
        web0, services0, machine0 = cpu_seconds(web_pid), cpu_by_name(SERVICES), machine_cpu()
        if generator == "wrk":
            children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            figures = _run_wrk(setup.base, requests, concurrency=concurrency, seconds=seconds,
                               threads=wrk_threads, folder=tmp / "wrk")  # fmt: skip
            children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            generator_cpu = (children1.ru_utime + children1.ru_stime
                             - children0.ru_utime - children0.ru_stime)  # fmt: skip
            statuses = {int(k): v for k, v in figures["statuses"].items()}
            elapsed = figures["duration_us"] / 1e6
            result.update(exhausted=bool(figures["exhausted"]), p50=figures["p50_us"] / 1e3,
                          p90=figures["p90_us"] / 1e3, p99=figures["p99_us"] / 1e3,
                          socket_errors=figures["socket_errors"])  # fmt: skip
        else:
            started, cpu0 = time.perf_counter(), time.process_time()
            answered = asyncio.run(_post_all(f"{setup.base}{WEBHOOK_PATH}", requests, concurrency))
            elapsed, generator_cpu = time.perf_counter() - started, time.process_time() - cpu0
            statuses = {s: answered.count(s) for s in set(answered)}
        web1, services1, machine1 = cpu_seconds(web_pid), cpu_by_name(SERVICES), machine_cpu()
        if profiler is not None:
            profiler.wait()
        stored = setup.sql(
            "SELECT count(*) FROM jobs_app_webhookdelivery WHERE verdict='verified'"
        )[0][0]
    accepted = statuses.get(202, 0) + statuses.get(204, 0)
    sent = sum(n for s, n in statuses.items() if s != 200)  # 200: wrk's filler after the pool
    result.update(sent=sent, accepted=accepted, stored=stored - len(warm), seconds=elapsed,
                  per_second=accepted / elapsed, errors=sent - accepted, statuses=statuses,
                  web_ms=1000 * (web1 - web0) / max(accepted, 1),
                  postgres_ms=1000 * (services1["postgres"] - services0["postgres"])
                  / max(accepted, 1),
                  machine_busy=(machine1[0] - machine0[0]) / max(machine1[1] - machine0[1], 1),
                  generator_ms=1000 * generator_cpu / max(accepted, 1))  # fmt: skip
    return result


def _ingest_row(ingest: dict) -> tuple[str, str, str]:
    detail = (f"{ingest['accepted']}/{ingest['sent']} accepted ({ingest['stored']} stored, "
              f"{ingest['errors']} errors) in {ingest['seconds']:.2f} s; {ingest['generator']}, "
              f"concurrency {ingest['concurrency']}")  # fmt: skip
    if ingest["generator"] == "wrk":
        detail += (f"; latency p50 {ingest['p50']:.1f} ms, p90 {ingest['p90']:.1f} ms, "
                   f"p99 {ingest['p99']:.1f} ms")  # fmt: skip
        if ingest["exhausted"]:
            detail += "; POOL EXHAUSTED: raise --webhooks"
    detail += (f"; CPU per delivery: web process {ingest['web_ms']:.2f} ms, load generator "
               f"{ingest['generator_ms']:.2f} ms, postgres (all of the machine's) "
               f"{ingest['postgres_ms']:.2f} ms; "
               f"machine {100 * ingest['machine_busy']:.0f}% busy")  # fmt: skip
    if "busy_before" in ingest:
        detail += f" ({100 * ingest['busy_before']:.0f}% before)"
    return ("webhook ingest, 1 web process", f"{ingest['per_second']:.0f} /s", detail)


def tasks_per_second(tmp: Path, tasks: int, workers: int) -> dict[str, float]:
    from bench.enhancements import run_enhancements
    from tests.deployment import deployment

    env = {"MOCKUP_API_STEP_SECONDS": "0", "MOCKUP_API_WORKERS": "2", "LOG_LEVEL": "WARNING"}
    with deployment(tmp, webs=1, workers=workers, **env) as (setup, _):
        run = run_enhancements(setup.base, tasks)
        created = setup.upstream_stats()
    return {
        "workers": workers,
        "tasks": tasks,
        "completed": run.completed,
        "upstream_creations": sum(created["createdByKey"].values()),
        "seconds": run.seconds,
        "create_seconds": run.create_seconds,
        "tasks_per_second": run.tasks_per_second,
        "p50": run.percentile(0.5),
        "p90": run.percentile(0.9),
        "p99": run.percentile(0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--webhooks",
        type=int,
        default=None,
        help="deliveries to sign (httpx: all are sent; wrk: the pool, default "
        f"{WRK_POOL_PER_SECOND} per second of --seconds); httpx default 5000",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="connections")
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "httpx"],
        default="auto",
        help="load generator (auto: wrk when installed)",
    )
    parser.add_argument("--seconds", type=float, default=10, help="wrk: run length")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        help="record a py-spy profile of the web process here (raw, --gil: CPU samples)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to this long for the machine to be under 25%% busy",
    )
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument(
        "--workers", default="1,2", help="comma-separated worker counts for tasks/s; empty: none"
    )
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--only-ingest", action="store_true", help="same as --workers ''")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="photobooth-scale-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "photobooth.settings")
    worker_counts = [] if args.only_ingest else [int(w) for w in args.workers.split(",") if w]

    rows = []
    if not args.skip_ingest:
        ingest = webhook_ingest(
            tmp / "ingest", webhooks=args.webhooks, concurrency=args.concurrency,
            generator=_generator(args.generator), seconds=args.seconds,
            wrk_threads=args.wrk_threads, py_spy=args.py_spy, wait_for_quiet=args.wait_quiet,
        )  # fmt: skip
        rows.append(_ingest_row(ingest))
    for workers in worker_counts:
        run = tasks_per_second(tmp / f"tasks-{workers}", args.tasks, workers)
        rows.append((f"tasks, {workers} worker(s), render 0", f"{run['tasks_per_second']:.1f} /s",
                     f"{run['completed']}/{run['tasks']} completed, "
                     f"{run['upstream_creations']} upstream creations, {run['seconds']:.1f} s "
                     f"(created in {run['create_seconds']:.1f} s); "
                     f"creation to terminal p50 {run['p50']:.2f} s, p90 {run['p90']:.2f} s, "
                     f"p99 {run['p99']:.2f} s"))  # fmt: skip

    print(f"\nPhotobooth scale-out benchmarks (PostgreSQL + Redis, {os.cpu_count()} CPUs)\n")
    width = max(len(r[0]) for r in rows)
    for name, figure, detail in rows:
        print(f"  {name:<{width}}  {figure:>10}   {detail}")


if __name__ == "__main__":
    main()
