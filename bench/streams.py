"""Benchmark of the real-time event streams: N clients x M events over WebSocket and SSE.

    .venv/bin/python bench/streams.py --transport both --processes 1,2 \\
        --clients 1000 --events 5000 --rate 1000

For every (transport, processes) case it starts 1 or 2 daphne processes on PostgreSQL
(database `photobooth_bench`, created and dropped here) and Redis (own channel-layer prefix),
opens N streams (`/ws/progress/?clientAppId=bench-<i>` or `/progress/client?clientAppId=...`,
each from its own booth session: the per-session cap is 20) from this one asyncio process,
measures the server's resident memory before and after opening them (memory per idle
connection), then has publisher processes (bench/publisher.py) publish M `progress` events
round-robin over the N tasks at R events/s, each with `publish_event` in a transaction, as
the server does. Clients note the arrival time of each event minus its `timestamp` (the
moment it was written, ISO with milliseconds, UTC; both clocks are this machine's wall
clock, so figures carry up to 1 ms of truncation).

It prints a few lines of details per case, then a table with one row per case. It is a
benchmark, not a test: it asserts nothing.
See bench/README.md and docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402
import redis.asyncio  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

from tests.live import free_port, migrate, server_env  # noqa: E402

DB_NAME = "photobooth_bench"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/0"
PUBLISHER = Path(__file__).resolve().parent / "publisher.py"
# One run at a time per machine: every run drops and re-creates the same database.
LOCK_PATH = Path(tempfile.gettempdir()) / "photobooth-bench-streams.lock"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- machine and processes ------------------------------------------------------------------


def raise_fd_limit() -> int:
    """Raise this process's (and so its children's) open-file limit as far as allowed."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU time of a process (from /proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_by_name(names: tuple[str, ...]) -> dict[str, float]:
    """Return the CPU seconds of all processes with these names, reaped children included."""
    totals = dict.fromkeys(names, 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name in totals:
            fields = text[text.rindex(")") + 2 :].split()
            totals[name] += sum(int(v) for v in fields[11:15]) / CLK_TCK
    return totals


SERVICES = ("postgres", "redis-server")


def machine_cpu() -> tuple[float, float]:
    """Return (busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def machine_description() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} CPUs ({model}), {mem_kb / 1024 / 1024:.1f} GiB RAM"


def recreate_database(*, drop_only: bool = False) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {DB_NAME}")


def delete_redis_keys(prefix: str) -> int:
    """Delete the benchmark's own keys (its unique prefix) and nothing else."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


class Server:
    """One daphne process serving the project, as `make run` does (logs to a file)."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "daphne"),
                "-e",  # as the Procfile: a listen backlog for bursts of connections
                f"tcp:port={self.port}:interface=127.0.0.1:backlog=1024",
                "photobooth.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_bytes()[-3000:].decode(errors="replace")
                raise RuntimeError(f"daphne did not start:\n{tail}")
            time.sleep(0.1)

    def metrics(self) -> dict[str, float]:
        """Return this process's stream counters from /metrics (summed over labels)."""
        wanted = (
            "photobooth_stream_gaps_repaired_total",
            "photobooth_stream_slow_consumer_closes_total",
            "photobooth_events_delivered_total",
            "photobooth_stream_connections_refused_total",
        )
        totals = dict.fromkeys(wanted, 0.0)
        try:
            text = httpx.get(f"{self.base}/metrics", timeout=10).text
        except httpx.HTTPError:
            return totals
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in totals:
                totals[name] += float(line.rsplit(" ", 1)[1])
        return totals

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


# --- clients --------------------------------------------------------------------------------


@dataclass
class Conn:
    index: int
    base: str
    token: str
    client_app_id: str
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    received: int = 0
    duplicates: int = 0
    heartbeats: int = 0
    seen: set[str] = field(default_factory=set)
    task: asyncio.Task | None = None


class Recorder:
    """Everything the clients saw: latencies of `progress` events and arrival times."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None
        self.received = 0
        self.other: dict[str, int] = {}

    def on_message(self, conn: Conn, text: str | bytes, now: float) -> None:
        payload = json.loads(text)
        kind = payload.get("type")
        if kind == "progress":
            if payload["id"] in conn.seen:
                conn.duplicates += 1
                return
            conn.seen.add(payload["id"])
            sent = datetime.fromisoformat(payload["timestamp"]).timestamp()
            self.latencies.append((now - sent) * 1000)
            conn.received += 1
            self.received += 1
            self.first_arrival = self.first_arrival or now
            self.last_arrival = now
        elif kind == "connected":
            conn.connected.set()
        elif kind == "heartbeat":
            conn.heartbeats += 1
        else:
            self.other[kind] = self.other.get(kind, 0) + 1


async def run_ws(conn: Conn, recorder: Recorder) -> None:
    url = conn.base.replace("http://", "ws://") + f"/ws/progress/?clientAppId={conn.client_app_id}"
    try:
        async with ws_connect(
            url,
            additional_headers={"Authorization": f"Bearer {conn.token}"},
            compression=None,
            open_timeout=120,
            close_timeout=2,
            ping_interval=None,  # the server sends its own heartbeats and pings
            max_queue=None,
        ) as socket:
            async for message in socket:
                recorder.on_message(conn, message, time.time())
            conn.error = conn.error or f"closed by server: {socket.close_code}"
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        conn.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.connected.set()  # never leave a waiter hanging


async def run_sse(conn: Conn, recorder: Recorder, client: httpx.AsyncClient) -> None:
    url = f"{conn.base}/progress/client"
    headers = {"Authorization": f"Bearer {conn.token}", "Accept": "text/event-stream"}
    try:
        async with client.stream(
            "GET", url, params={"clientAppId": conn.client_app_id}, headers=headers
        ) as response:
            if response.status_code != 200:
                conn.error = f"HTTP {response.status_code}"
                return
            buffer = b""
            async for chunk in response.aiter_raw():
                now = time.time()
                buffer += chunk
                while b"\n\n" in buffer:
                    frame, buffer = buffer.split(b"\n\n", 1)
                    lines = frame.split(b"\n")
                    data = [line[5:].lstrip() for line in lines if line[:5] == b"data:"]
                    if data:
                        recorder.on_message(conn, b"\n".join(data), now)
                    elif frame.startswith(b": heartbeat"):
                        conn.heartbeats += 1
            conn.error = conn.error or "stream ended"
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        conn.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.connected.set()


async def open_streams(
    conns: list[Conn],
    transport: str,
    recorder: Recorder,
    sse_client: httpx.AsyncClient,
    concurrency: int,
    deadline: float,
) -> list[Conn]:
    """Open the streams, at most `concurrency` handshakes at a time; return those connected."""
    gate = asyncio.Semaphore(concurrency)

    async def open_one(conn: Conn) -> None:
        async with gate:
            if transport == "ws":
                conn.task = asyncio.create_task(run_ws(conn, recorder))
            else:
                conn.task = asyncio.create_task(run_sse(conn, recorder, sse_client))
            await conn.connected.wait()

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(open_one(c) for c in conns)), deadline)
    return [c for c in conns if c.connected.is_set() and c.error is None]


async def close_streams(conns: list[Conn]) -> None:
    tasks = [c.task for c in conns if c.task is not None]
    for task in tasks:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)


# --- publishers -----------------------------------------------------------------------------


async def start_publishers(
    count: int, args: argparse.Namespace, tasks_file: Path, env: dict, log_dir: Path
) -> list[asyncio.subprocess.Process]:
    processes = []
    # INFO, so that channels-redis' "channels over capacity" (dropped messages) is logged.
    env = dict(env, LOG_LEVEL="INFO")
    for index in range(count):
        log = (log_dir / f"publisher-{index}.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PUBLISHER),
            "publish",
            "--tasks",
            str(tasks_file),
            "--index",
            str(index),
            "--publishers",
            str(count),
            "--events",
            str(args.events),
            "--rate",
            str(args.rate),
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        log.close()
        processes.append(process)
    for process in processes:
        line = await asyncio.wait_for(process.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise RuntimeError(f"publisher did not get ready (see {log_dir}/publisher-*.log)")
    return processes


async def start_py_spy(
    server: Server, seconds: float, log_dir: Path
) -> asyncio.subprocess.Process | None:
    """Sample the server with py-spy (when installed) while the events are published."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        print("warning: --py-spy given but py-spy is not installed")
        return None
    output = log_dir / f"py-spy-{server.pid}.txt"
    return await asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(server.pid), "--duration", str(math.ceil(seconds)),
        "--format", "raw", "--output", str(output), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def py_spy_summary(path: Path, top: int = 25) -> str:
    """Return the frames that held most samples (inclusive), from py-spy's raw output."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    lines = [f"  {100 * n / max(total, 1):5.1f}%  {frame[:140]}" for frame, n in ranked]
    return f"{path.name}: {total} samples\n" + "\n".join(lines)


async def stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


# --- one case -------------------------------------------------------------------------------


class InboxSampler:
    """Watch each server's channel-layer inbox in Redis: how far its receive loop is behind.

    channels-redis keeps one sorted set per process for all of its consumers' messages
    (`<prefix>specific.<process>!`); group_send drops messages once it holds `capacity`.
    """

    def __init__(self, prefix: str, conns: list[Conn], processes: int):
        self.prefix = prefix
        self.conns = conns
        self.processes = processes
        self.keys: list[str] = []
        self.max_total = 0
        self.task: asyncio.Task | None = None
        self.client = redis.asyncio.Redis.from_url(REDIS_URL)

    async def find_keys(self) -> None:
        keys: set[str] = set()
        for conn in self.conns[: 4 * self.processes]:
            group = f"{self.prefix}:group:client.{conn.client_app_id}"
            for member in await self.client.zrange(group, 0, -1):
                keys.add(self.prefix + member.decode().split("!", 1)[0] + "!")
        self.keys = sorted(keys)

    async def _run(self) -> None:
        while True:
            total = 0
            for key in self.keys:
                total += await self.client.zcard(key)
            self.max_total = max(self.max_total, total)
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, redis.RedisError):
                await self.task
        await self.client.aclose()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def measure(
    transport: str,
    servers: list[Server],
    rows: list[dict],
    args: argparse.Namespace,
    tasks_file: Path,
    env: dict,
    log_dir: Path,
) -> dict:
    n = len(rows)
    recorder = Recorder()
    conns = [
        Conn(i, servers[i % len(servers)].base, row["token"], row["clientAppId"])
        for i, row in enumerate(rows)
    ]
    limits = httpx.Limits(max_connections=n + 100, max_keepalive_connections=0)
    timeout = httpx.Timeout(connect=120, read=None, write=30, pool=300)
    result: dict = {"transport": transport, "processes": len(servers), "clients": n}
    result["load_before"] = os.getloadavg()[0]
    result["idle"] = args.idle
    result["server_env"] = args.server_env
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as sse_client:
        # Warm-up: a few streams opened and closed, so lazy imports and first-use caches are
        # in the baseline rather than counted as per-connection memory.
        warm = [Conn(c.index, c.base, c.token, c.client_app_id) for c in conns[: min(10, n)]]
        await open_streams(warm, transport, Recorder(), sse_client, 10, 60)
        await close_streams(warm)
        await asyncio.sleep(2)

        rss_before = [rss_kb(s.pid) for s in servers]
        started = time.monotonic()
        opened = await open_streams(
            conns, transport, recorder, sse_client, args.connect_concurrency, args.connect_timeout
        )
        result["connect_seconds"] = time.monotonic() - started
        result["connected"] = len(opened)
        errors: dict[str, int] = {}
        for conn in conns:
            if conn.error:
                errors[conn.error[:120]] = errors.get(conn.error[:120], 0) + 1
        result["connect_errors"] = errors
        result["connect_rate"] = len(opened) / max(result["connect_seconds"], 1e-9)
        await asyncio.sleep(args.settle)
        rss_after = [rss_kb(s.pid) for s in servers]
        result["rss_after_mb"] = [kb / 1024 for kb in rss_after]
        result["kb_per_conn"] = (
            (sum(rss_after) - sum(rss_before)) / len(opened) if opened else math.nan
        )

        # Idle: the streams only exchange heartbeats (every STREAM_HEARTBEAT_SECONDS).
        idle0 = [cpu_seconds(s.pid) for s in servers], cpu_by_name(SERVICES), time.monotonic()
        await asyncio.sleep(args.idle)
        idle1 = [cpu_seconds(s.pid) for s in servers], cpu_by_name(SERVICES), time.monotonic()
        span = max(idle1[2] - idle0[2], 1e-9)
        result["idle_server_cpu"] = 100 * (sum(idle1[0]) - sum(idle0[0])) / span
        result["idle_postgres_cpu"] = 100 * (idle1[1]["postgres"] - idle0[1]["postgres"]) / span
        result["idle_redis_cpu"] = (
            100 * (idle1[1]["redis-server"] - idle0[1]["redis-server"]) / span
        )
        result["rss_idle_mb"] = [rss_kb(s.pid) / 1024 for s in servers]
        result["dropped_while_idle"] = sum(1 for c in opened if c.error)

        # Publish.
        sampler = InboxSampler(env["BENCH_CHANNEL_PREFIX"], opened, len(servers))
        with contextlib.suppress(redis.RedisError):
            await sampler.find_keys()
        publishers = args.publishers or max(1, math.ceil(args.rate / args.rate_per_publisher))
        result["publishers"] = publishers
        connected_ids = {c.index for c in opened}
        expected = sum(1 for j in range(args.events) if j % n in connected_ids)
        processes = await start_publishers(publishers, args, tasks_file, env, log_dir)
        try:
            t0 = time.time() + 1.0
            cpu0 = [cpu_seconds(s.pid) for s in servers]
            own0 = os.times()
            machine0 = machine_cpu()
            services0 = cpu_by_name(SERVICES)
            for process in processes:
                process.stdin.write(f"go {t0}\n".encode())
                await process.stdin.drain()
            sampler.start()
            profilers = [
                await start_py_spy(s, args.events / args.rate + 1, log_dir) for s in servers
            ] if args.py_spy else []  # fmt: skip
            summaries = []
            budget = args.events / args.rate + 120
            for process in processes:
                line = await asyncio.wait_for(process.stdout.readline(), budget)
                summaries.append(json.loads(line))
                await process.wait()
            published_at = time.time()
            cpu_published = [cpu_seconds(s.pid) for s in servers]
            own_published = os.times()
            machine_published = machine_cpu()
            services_published = cpu_by_name(SERVICES)
            for profiler in profilers:
                if profiler is not None:
                    await profiler.wait()
            # Drain: until everything arrived or nothing arrived for `drain` seconds.
            while recorder.received < expected:
                before = recorder.received
                waited = 0.0
                while recorder.received == before and waited < args.drain:
                    await asyncio.sleep(0.1)
                    waited += 0.1
                if recorder.received == before:
                    break
            end = time.time()
        finally:
            await sampler.stop()
            for process in processes:
                await stop_process(process)
        result["inbox_max"] = sampler.max_total
        result["inbox_keys"] = len(sampler.keys)

        published = sum(s["published"] for s in summaries)
        publish_end = max(s["lastEnd"] or t0 for s in summaries)
        deliver_end = recorder.last_arrival or end
        # CPU figures cover the publishing (t0 until the last publisher is done), not the drain.
        window = max(published_at - t0, 1e-9)
        cpu1, own1, machine1 = cpu_published, own_published, machine_published
        services1 = services_published
        busy = (machine1[0] - machine0[0]) / max(machine1[1] - machine0[1], 1)
        result.update(
            events=args.events,
            rate=args.rate,
            published=published,
            publish_rate=published / max(publish_end - t0, 1e-9),
            publish_late_max=max(s["lateMax"] for s in summaries),
            publish_p50_ms=1000 * max(s["publishP50"] for s in summaries),
            publish_p99_ms=1000 * max(s["publishP99"] for s in summaries),
            expected=expected,
            received=recorder.received,
            lost=expected - recorder.received,
            duplicates=sum(c.duplicates for c in conns),
            deliver_rate=recorder.received / max(deliver_end - t0, 1e-9),
            p50=percentile(recorder.latencies, 0.50),
            p90=percentile(recorder.latencies, 0.90),
            p99=percentile(recorder.latencies, 0.99),
            max=max(recorder.latencies, default=math.nan),
            over_1s=sum(1 for v in recorder.latencies if v > 1000),
            drain_seconds=end - published_at,
            # In % of one core.
            server_cpu=[100 * (b - a) / window for a, b in zip(cpu0, cpu1, strict=True)],
            client_cpu=100 * (own1.user + own1.system - own0.user - own0.system) / window,
            publisher_cpu=100 * sum(s["cpuSeconds"] for s in summaries) / window,
            machine_cpu=100 * busy * (os.cpu_count() or 1),
            postgres_cpu=100 * (services1["postgres"] - services0["postgres"]) / window,
            redis_cpu=100 * (services1["redis-server"] - services0["redis-server"]) / window,
            other_messages=recorder.other,
        )
        result["server_ms_per_event"] = (
            1000 * (sum(cpu1) - sum(cpu0)) / recorder.received if recorder.received else math.nan
        )
        result["publisher_ms_per_event"] = (
            1000 * sum(s["cpuSeconds"] for s in summaries) / published if published else math.nan
        )
        result["postgres_ms_per_event"] = (
            1000 * (services1["postgres"] - services0["postgres"]) / published
            if published
            else math.nan
        )
        dropped: dict[str, int] = {}
        for conn in opened:
            if conn.error:
                dropped[conn.error[:80]] = dropped.get(conn.error[:80], 0) + 1
        result["dropped_streams"] = sum(dropped.values())
        result["dropped_reasons"] = dropped
        # Log errors up to here happened while measuring; later ones while closing.
        result["log_offsets"] = await asyncio.to_thread(
            lambda: [s.log_path.stat().st_size for s in servers]
        )
        await close_streams(conns)
    metrics = [s.metrics() for s in servers]
    result["gaps_repaired"] = sum(m["photobooth_stream_gaps_repaired_total"] for m in metrics)
    result["slow_closes"] = sum(m["photobooth_stream_slow_consumer_closes_total"] for m in metrics)
    return result


def wait_quiet(limit: float, threshold: float = 0.25) -> float:
    """Wait (up to `limit` s) until the machine is under `threshold` busy; return busy share."""
    deadline = time.monotonic() + limit
    while True:
        start = machine_cpu()
        time.sleep(3)
        end = machine_cpu()
        busy = (end[0] - start[0]) / max(end[1] - start[1], 1)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        print(f"  machine {100 * busy:.0f}% busy; waiting for it to calm down...", flush=True)


def run_case(
    transport: str,
    processes: int,
    rows: list[dict],
    args: argparse.Namespace,
    tasks_file: Path,
    env: dict,
    log_dir: Path,
) -> dict:
    servers: list[Server] = []
    busy_before = wait_quiet(args.wait_quiet) if args.wait_quiet else None
    try:
        for index in range(processes):
            servers.append(Server(env, log_dir / f"daphne-{transport}-{processes}-{index}.log"))
        for server in servers:
            server.wait_ready()
        for path in log_dir.glob("publisher-*.log"):
            path.unlink()
        result = asyncio.run(measure(transport, servers, rows, args, tasks_file, env, log_dir))
    finally:
        for server in servers:
            server.stop()
    result["busy_before"] = busy_before
    result["layer_drops"] = sum(
        path.read_text(errors="replace").count("over capacity")
        for path in log_dir.glob("publisher-*.log")
    )
    if args.py_spy:
        for server in servers:
            path = log_dir / f"py-spy-{server.pid}.txt"
            if path.exists():
                target = Path(args.py_spy) / f"{transport}-{processes}p-{server.pid}.txt"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
                print(py_spy_summary(path))
    texts = [server.log_path.read_bytes() for server in servers]
    offsets = result.get("log_offsets") or [len(t) for t in texts]
    logs = [t[:o].decode(errors="replace") for t, o in zip(texts, offsets, strict=True)]
    closing = [t[o:].decode(errors="replace") for t, o in zip(texts, offsets, strict=True)]
    result["app_crashes"] = sum(log.count("Exception inside application") for log in logs)
    result["stream_failures"] = sum(log.count("stream_failed") for log in logs)
    # Two failure modes of redis-py 8 under channels-redis, counted apart (once per traceback).
    timeout, exhausted = "TimeoutError: Timeout reading", "MaxConnectionsError: Too many"
    result["redis_read_timeouts"] = sum(log.count(timeout) for log in logs)
    result["redis_pool_exhausted"] = sum(log.count(exhausted) for log in logs)
    result["pool_exhausted_closing"] = sum(log.count(exhausted) for log in closing)
    return result


# --- report ---------------------------------------------------------------------------------

COLUMNS = [
    ("transport", "{transport}"),
    ("procs", "{processes}"),
    ("redis socket timeout", "{redis_timeout}"),
    ("clients", "{connected}/{clients}"),
    ("events", "{events}"),
    ("target/s", "{rate:.0f}"),
    ("published/s", "{publish_rate:.0f}"),
    ("delivered/s", "{deliver_rate:.0f}"),
    ("p50 ms", "{p50:.1f}"),
    ("p90 ms", "{p90:.1f}"),
    ("p99 ms", "{p99:.1f}"),
    ("max ms", "{max:.0f}"),
    ("lost", "{lost}"),
    ("KB/idle conn", "{kb_per_conn:.1f}"),
    ("server CPU %", "{server_cpu_text}"),
]


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        values = dict(r, server_cpu_text="+".join(f"{c:.0f}" for c in r["server_cpu"]))
        rows.append([fmt.format(**values) for _, fmt in COLUMNS])
    headers = [name for name, _ in COLUMNS]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(headers), "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)


def details(r: dict) -> str:
    """Return the case's figures that do not fit the table, a few lines of them."""
    experiment = f" [experiment: {' '.join(r['server_env'])}]" if r.get("server_env") else ""
    join = "+".join
    lines = [
        f"{r['transport']}/{r['processes']}p{experiment}",
        f"  open: {r['connected']} streams in {r['connect_seconds']:.1f}s "
        f"({r['connect_rate']:.0f}/s), refused or failed {r['connect_errors'] or 0}; server RSS "
        f"{join(f'{m:.0f}' for m in r['rss_after_mb'])} MB with them open",
        f"  idle {r['idle']:.0f}s: CPU % server {r['idle_server_cpu']:.0f}, postgres "
        f"{r['idle_postgres_cpu']:.0f}, redis {r['idle_redis_cpu']:.0f}; streams lost while "
        f"idle {r['dropped_while_idle']}",
        f"  publish: {r['publishers']} publisher(s), publish_event p50/p99 "
        f"{r['publish_p50_ms']:.1f}/{r['publish_p99_ms']:.1f} ms, worst lag behind schedule "
        f"{r['publish_late_max']:.2f}s",
        f"  deliver: received {r['received']}/{r['expected']} (drain {r['drain_seconds']:.1f}s), "
        f"duplicates {r['duplicates']}, >1s late {r['over_1s']}, gaps repaired "
        f"{r['gaps_repaired']:.0f}, most messages waiting in the servers' channel-layer inboxes "
        f"{r['inbox_max']} ({r['inbox_keys']} inboxes), channel-layer drops {r['layer_drops']}, "
        f"slow-consumer closes {r['slow_closes']:.0f}",
        f"  failures: consumer crashes {r['app_crashes']}, streams failed "
        f"{r['stream_failures']}, Redis read timeouts {r['redis_read_timeouts']}, Redis pool "
        f"exhausted {r['redis_pool_exhausted']} (+{r['pool_exhausted_closing']} while closing), "
        f"streams dropped {r['dropped_streams']} {r['dropped_reasons'] or ''}",
        f"  CPU ms per event: servers {r['server_ms_per_event']:.2f}, publishers "
        f"{r['publisher_ms_per_event']:.2f}, postgres {r['postgres_ms_per_event']:.2f}",
        f"  CPU % of one core while publishing: servers {join(f'{c:.0f}' for c in r['server_cpu'])}"
        f", publishers {r['publisher_cpu']:.0f}, client {r['client_cpu']:.0f}, postgres "
        f"{r['postgres_cpu']:.0f}, redis {r['redis_cpu']:.0f}; whole machine "
        f"{r['machine_cpu']:.0f} of {100 * (os.cpu_count() or 1)} (load average before "
        f"{r['load_before']:.2f})",
    ]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def setup_data(n: int, env: dict, work: Path, workers: int) -> tuple[list[dict], Path]:
    """Create N sessions, tokens, uploads, client apps and tasks (in parallel processes)."""
    workers = max(1, min(workers, n))
    share = math.ceil(n / workers)
    jobs = []
    for w in range(workers):
        first, count = w * share, min(share, n - w * share)
        if count <= 0:
            continue
        out = work / f"tasks-{w}.json"
        command = [sys.executable, str(PUBLISHER), "setup", "--clients", str(count)]
        command += ["--first", str(first), "--out", str(out)]
        jobs.append((subprocess.Popen(command, cwd=ROOT, env=env), out))
    rows: list[dict] = []
    for process, out in jobs:
        if process.wait(1800) != 0:
            raise RuntimeError("setup failed")
        rows += json.loads(out.read_text())
    tasks_file = work / "tasks.json"
    tasks_file.write_text(json.dumps(rows))
    return rows, tasks_file


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark WebSocket and SSE event streams (latency, throughput, memory).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--transport", choices=["ws", "sse", "both"], default="both", help="stream transport(s)"
    )
    parser.add_argument(
        "--processes", default="1", help="daphne processes: 1, 2, or a list such as 1,2"
    )
    parser.add_argument("--clients", type=int, default=1000, help="N concurrent streams")
    parser.add_argument("--events", type=int, default=5000, help="M progress events in all")
    parser.add_argument("--rate", type=float, default=1000, help="R target events per second")
    parser.add_argument(
        "--publishers", type=int, default=0, help="publisher processes (0: rate / rate-per-pub)"
    )
    parser.add_argument("--rate-per-publisher", type=float, default=250, help="for --publishers 0")
    parser.add_argument(
        "--connect-concurrency", type=int, default=50, help="handshakes in flight at once"
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=300, help="seconds to open all the streams"
    )
    parser.add_argument("--settle", type=float, default=3, help="seconds before sampling RSS")
    parser.add_argument(
        "--drain", type=float, default=20, help="stop waiting after this many quiet seconds"
    )
    parser.add_argument(
        "--idle", type=float, default=20, help="seconds of idle streams (CPU) before publishing"
    )
    parser.add_argument(
        "--setup-workers", type=int, default=2, help="processes creating the sessions and tasks"
    )
    parser.add_argument(
        "--py-spy", metavar="DIR", help="profile the servers while publishing (needs py-spy)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each case, wait up to this long for the machine to be mostly idle",
    )
    parser.add_argument(
        "--redis-socket-timeout-fix",
        action="store_true",
        help="give the channel layer's Redis connections socket_timeout=None (see README)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for servers and publishers, for experiments only "
        "(e.g. STREAM_HEARTBEAT_SECONDS=3600, BENCH_DB_POOL_OFF=1); repeatable",
    )
    parser.add_argument(
        "--wait-lock",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait this long for another run of this benchmark on this machine to finish",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep daphne/publisher logs")
    return parser.parse_args()


def take_lock(wait: float):
    """Hold the machine-wide lock of this benchmark (or exit when another run holds it)."""
    handle = LOCK_PATH.open("a+")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            if time.monotonic() >= deadline:
                sys.exit(
                    f"another bench/streams.py run (pid {holder}) is using {DB_NAME}; "
                    f"wait for it, or pass --wait-lock SECONDS"
                )
            time.sleep(5)
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle


def main() -> None:
    args = parse_args()
    lock = take_lock(args.wait_lock)  # noqa: F841 (held until the process exits)
    transports = ["ws", "sse"] if args.transport == "both" else [args.transport]
    process_counts = [int(p) for p in args.processes.split(",")]
    if any(p < 1 for p in process_counts):
        sys.exit("--processes must be at least 1")
    fd_limit = raise_fd_limit()
    if fd_limit < 2 * args.clients + 200:
        print(f"warning: open-file limit {fd_limit} is low for {args.clients} clients")
    print(f"machine: {machine_description()}; load average {os.getloadavg()[0]:.2f}")

    prefix = f"pb-bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="photobooth-bench-"))
    env = server_env(
        work / "var",
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        DJANGO_SETTINGS_MODULE="bench.settings",
        BENCH_CHANNEL_PREFIX=prefix,
        BENCH_REDIS_SOCKET_TIMEOUT_FIX="1" if args.redis_socket_timeout_fix else "0",
        # The streams are measured alone: plain daphne runs no worker, and with REDIS_URL set
        # the built-in mockup API is never mounted (nothing calls this address).
        MOCKUP_API_URL="http://127.0.0.1:9/mockup-api",
        LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    for item in args.server_env:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--server-env wants KEY=VALUE, not {item!r}")
        env[key] = value
        print(f"experiment: {key}={value} (not a project default)")
    results: list[dict] = []
    try:
        recreate_database()
        migrate(env)
        described = subprocess.run(
            [sys.executable, str(PUBLISHER), "describe"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        effective = json.loads(described)
        print(f"effective settings: {described}")
        started = time.monotonic()
        rows, tasks_file = setup_data(args.clients, env, work, args.setup_workers)
        took = time.monotonic() - started
        print(f"setup: {len(rows)} sessions with one task each in {took:.0f}s")
        for processes in process_counts:
            for transport in transports:
                print(f"running {transport} on {processes} process(es)...", flush=True)
                # A channel prefix per case: no group member left over from an earlier case.
                case_env = dict(env, BENCH_CHANNEL_PREFIX=f"{prefix}-{transport}{processes}")
                result = run_case(transport, processes, rows, args, tasks_file, case_env, work)
                result["redis_timeout"] = str(effective["redisSocketTimeout"]).split(" ")[0]
                results.append(result)
                print(details(result), flush=True)
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        if results:
            print()
            print(table(results))
        if args.json and results:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        with contextlib.suppress(Exception):
            recreate_database(drop_only=True)
        with contextlib.suppress(Exception):
            delete_redis_keys(prefix)
        if args.keep_logs:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
