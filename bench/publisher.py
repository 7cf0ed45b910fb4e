"""Django side of the stream benchmark (bench/streams.py starts it; not meant to be run by hand).

    publisher.py setup --clients N --out tasks.json
        Create N booth sessions, each with a bearer token, an upload, a client app `bench-<i>`
        and one task, through the project's actions; write them as JSON.

    publisher.py flat-out --tasks tasks.json --threads T --seconds S
        Publish as fast as T threads of this one process can for S seconds (thread k takes
        the tasks k, k+T, ...: its own sessions), then print events/s, CPU per event and
        the queries of one publish as JSON (bench/publish_rate.py).

    publisher.py publish --tasks tasks.json --index K --publishers P --events M --rate R
        Print `ready`, wait for `go <t0>` on stdin, then publish the events j = K, K+P, K+2P...
        (j < M), each at wall-clock time t0 + j/R, to task j % N, exactly as the server does:
        `with transaction.atomic(): publish_event(task, "progress", ...)`. Print a JSON summary.

Django is configured from the environment the benchmark passes (DATABASE_URL, REDIS_URL,
DJANGO_SETTINGS_MODULE=bench.settings, ...). Announcements go through `jobs_app.announcer`
to the "server loop", as in a server worker thread: this process runs a long-lived event loop
in a background thread and registers it as the server loop, so the channel layer keeps its
Redis connections (rather than one event loop per announcement).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()


def start_announce_loop() -> asyncio.AbstractEventLoop:
    """Run an event loop in a daemon thread and make it the process's server loop."""
    from jobs_app import server_loop

    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        loop.run_forever()

    threading.Thread(target=run, name="announce-loop", daemon=True).start()
    started.wait(10)
    server_loop._server_loop = loop
    return loop


def tiny_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def cmd_setup(args: argparse.Namespace) -> None:
    setup_django()
    start_announce_loop()
    from django.core.files.uploadedfile import SimpleUploadedFile

    from jobs_app.actions import TaskRequest, check_create_task
    from jobs_app.states import TaskKind
    from jobs_app.uploads import do_store_upload
    from sessions_app.actions import do_start_session

    image = tiny_jpeg()
    rows = []
    for i in range(args.first, args.first + args.clients):
        started = do_start_session()
        session = started.session
        upload = do_store_upload(session, SimpleUploadedFile("p.jpg", image, "image/jpeg"))
        request = TaskRequest(
            client_app_id=f"bench-{i}", kind=TaskKind.ENHANCEMENT, upload_id=upload.pk
        )
        task = check_create_task(session, request).task
        rows.append({"token": started.token, "clientAppId": f"bench-{i}", "taskId": str(task.pk)})
    Path(args.out).write_text(json.dumps(rows))


def cmd_publish(args: argparse.Namespace) -> None:
    setup_django()
    announce_loop = start_announce_loop()
    from django.db import connection, transaction

    from jobs_app.events import publish_event
    from jobs_app.models import Task

    rows = json.loads(Path(args.tasks).read_text())
    ids = [row["taskId"] for row in rows]
    mine = {ids[j % len(ids)] for j in range(args.index, args.events, args.publishers)}
    by_id = {str(t.pk): t for t in Task.objects.select_related("client_app").filter(pk__in=mine)}
    tasks = [by_id.get(task_id) for task_id in ids]
    connection.ensure_connection()

    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "go":
        return
    t0 = float(line[1])
    cpu_at_go = os.times()
    profiler = None
    if profile_path := os.environ.get("BENCH_PROFILE"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    count = len(ids)
    lateness: list[float] = []
    durations: list[float] = []
    published = 0
    first_start = last_end = None
    for j in range(args.index, args.events, args.publishers):
        due = t0 + j / args.rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        start = time.time()
        lateness.append(start - due)
        task = tasks[j % count]
        with transaction.atomic():
            publish_event(task, "progress", jobIndex=0, progress=round(j / args.events, 6))
        end = time.time()
        durations.append(end - start)
        published += 1
        first_start = first_start or start
        last_end = end
    usage = os.times()
    # The last events are announced after their commit, on the announce loop: wait for them
    # (exiting first left the last one to the streams' heartbeat: ~15 s late).
    from jobs_app import announcer

    asyncio.run_coroutine_threadsafe(announcer.drain(10), announce_loop).result()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(f"{profile_path}.publisher-{args.index}.pstats")
    lateness.sort()
    durations.sort()

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0

    summary = {
        "index": args.index,
        "published": published,
        "firstStart": first_start,
        "lastEnd": last_end,
        "lateP50": pct(lateness, 0.5),
        "lateMax": lateness[-1] if lateness else 0.0,
        "publishP50": pct(durations, 0.5),
        "publishP99": pct(durations, 0.99),
        "cpuSeconds": usage.user + usage.system - cpu_at_go.user - cpu_at_go.system,
    }
    print(json.dumps(summary), flush=True)


def cmd_flat_out(args: argparse.Namespace) -> None:
    setup_django()
    start_announce_loop()
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from jobs_app.events import publish_event
    from jobs_app.models import Task

    rows = json.loads(Path(args.tasks).read_text())
    tasks = list(Task.objects.filter(pk__in=[row["taskId"] for row in rows]))
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        publish_event(tasks[0], "progress", jobIndex=0, progress=0.0)
    counts = [0] * args.threads
    stop = threading.Event()

    def publish(k: int) -> None:
        mine = tasks[k :: args.threads]
        n = 0
        try:
            while not stop.is_set():
                with transaction.atomic():
                    publish_event(mine[n % len(mine)], "progress", jobIndex=0, progress=0.5)
                n += 1
                counts[k] = n
        finally:
            connection.close()

    threads = [threading.Thread(target=publish, args=(k,)) for k in range(args.threads)]
    cpu0, t0 = os.times(), time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed, cpu1 = time.perf_counter() - t0, os.times()
    time.sleep(0.5)  # let the announcer hand the last events to the channel layer
    published = sum(counts)
    cpu = cpu1.user + cpu1.system - cpu0.user - cpu0.system
    print(json.dumps({
        "threads": args.threads,
        "published": published,
        "eventsPerSecond": published / elapsed,
        "cpuMsPerEvent": 1000 * cpu / max(published, 1),
        "queriesPerEvent": len(queries),
        "queries": [q["sql"][:120] for q in queries.captured_queries],
    }), flush=True)  # fmt: skip


def cmd_describe(args: argparse.Namespace) -> None:
    """Print the effective settings that matter to the streams, as JSON."""
    setup_django()
    from django.conf import settings

    layer = settings.CHANNEL_LAYERS["default"]
    hosts = layer.get("CONFIG", {}).get("hosts", [])
    host = hosts[0] if hosts and isinstance(hosts[0], dict) else {}
    database = settings.DATABASES["default"]
    print(
        json.dumps(
            {
                "channelLayer": layer["BACKEND"].rsplit(".", 1)[-1],
                # redis-py 8 defaults: socket_timeout 5 s, at most 100 connections per pool.
                "redisSocketTimeout": host.get("socket_timeout", "default (5)"),
                "redisMaxConnections": host.get("max_connections", "default (100)"),
                "channelCapacity": layer.get("CONFIG", {}).get("capacity"),
                "databasePool": database.get("OPTIONS", {}).get("pool"),
                "connMaxAge": database.get("CONN_MAX_AGE"),
                "heartbeatSeconds": settings.STREAM_HEARTBEAT_SECONDS,
                "streamQueueMax": settings.STREAM_QUEUE_MAX,
                "streamMaxPerSession": settings.STREAM_MAX_PER_SESSION,
            },
            default=str,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup")
    setup.add_argument("--clients", type=int, required=True)
    setup.add_argument("--first", type=int, default=0, help="index of the first client")
    setup.add_argument("--out", required=True)
    publish = sub.add_parser("publish")
    publish.add_argument("--tasks", required=True)
    publish.add_argument("--index", type=int, required=True)
    publish.add_argument("--publishers", type=int, required=True)
    publish.add_argument("--events", type=int, required=True)
    publish.add_argument("--rate", type=float, required=True)
    flat = sub.add_parser("flat-out")
    flat.add_argument("--tasks", required=True)
    flat.add_argument("--threads", type=int, default=4)
    flat.add_argument("--seconds", type=float, default=10)
    sub.add_parser("describe")
    args = parser.parse_args()
    commands = {"setup": cmd_setup, "publish": cmd_publish, "flat-out": cmd_flat_out,
                "describe": cmd_describe}  # fmt: skip
    commands[args.command](args)


if __name__ == "__main__":
    main()
