"""A booth-load driver against a live server, and the server under test in two modes.

`run_load(base, LoadPlan(...))` does what N photo booths do at once: it starts N sessions
(bearer tokens), uploads a small PNG per session, opens ONE stream per session (SSE
`/progress/client?clientAppId=` or WebSocket `/ws/progress/?clientAppId=`), waits for every
`connected`, then posts the N `generation` tasks together. For every stored event a stream
receives it notes arrival minus the event's `timestamp`. It can drop streams at random moments
and resume them from their last cursor (SSE `Last-Event-ID`, WebSocket `?cursor=`), and keep
K idle streams open beside the load. When every task is terminal and every stream has seen its
task's terminal event, it reads each client's log over REST (`GET /api/events`, page by page
from the start) and counts what the stream lost, repeated or delivered out of log order.

`booth_server(mode, folder)` starts the server under test with tests/live.py on a fresh var
dir (a copy of one migrated template, tests/upstream_helpers.py). "embedded" is `make run`'s
defaults (`manage.py serve`, SQLite, the in-memory channel layer, the built-in mockup API in
the same process); "upstream-alone" runs `manage.py run_mockup_api` as its own process and
points our `serve` process at it. Both render at 0 s per step. The processes' logs are kept
in files, and `log_findings()` scans them.

No pytest here: tests/test_booth_load.py asserts on the result, bench/booth.py prints it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

# Contract section 3: the stored event types. `connected` and `reset` are not stored, and
# neither are heartbeats (SSE comments, WS {"type":"heartbeat"}) nor WS pong/ack/error replies.
STORED_TYPES = frozenset(
    {
        "queued",
        "initiating",
        "started",
        "progress",
        "preview",
        "jobCompleted",
        "jobFailed",
        "completed",
        "failed",
        "cancelled",
        "redirect",
    }
)
TERMINAL_TYPES = frozenset({"completed", "failed", "cancelled"})
TRANSPORTS = ("sse", "ws")
MODES = ("embedded", "upstream-alone")
# Per generation job at least initiating, started and jobCompleted; per task queued and the
# terminal event. Random drops are planned below this count, so every planned drop happens.
MIN_EVENTS_PER_JOB = 3
STREAMS_PER_SESSION = 20  # STREAM_MAX_PER_SESSION's default (contract section 7)


# --- The plan and the result -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadPlan:
    """What to run: sessions x images, one stream each, optional drops and idle streams."""

    sessions: int = 20
    images: int = 16  # numberImages of each generation task (1..16)
    transport: str = "ws"  # "sse" | "ws" | "mixed" (booths alternate: sse, ws, sse, ...)
    reconnects: int = 0  # total random stream drops, each followed by a resume
    idle_streams: int = 0  # extra streams kept open, idle, over extra sessions
    idle_transport: str | None = None  # default: `transport`
    style: str = "pop-art"
    timeout: float = 300.0  # from posting the tasks until we give up waiting
    grace: float = 20.0  # once REST says all terminal, how long streams may still lag
    poll_every: float = 5.0  # a task whose stream is silent this long is read over REST
    connect_concurrency: int = 50  # streams being opened at a time
    seed: int | None = None


@dataclass(kw_only=True)
class LoadResult:
    """What one load run saw; figures in milliseconds."""

    plan: LoadPlan
    latencies_ms: list[float] = field(default_factory=list)
    events: int = 0  # distinct stored events received by the load streams
    log_events: int = 0  # events in the clients' logs, read over REST
    lost: int = 0  # gaps: events never received although later ones were
    undelivered: int = 0  # the logs' tails no stream received before the run ended
    duplicated: int = 0
    out_of_order: int = 0
    unknown: int = 0  # received, but not in the log
    resets: int = 0
    tasks_total: int = 0
    tasks_completed: int = 0
    tasks_failed: int = 0
    tasks_cancelled: int = 0
    tasks_not_finished: int = 0
    terminal_missed: int = 0  # tasks terminal over REST whose stream never saw the end
    http_statuses: Counter = field(default_factory=Counter)
    transport_errors: Counter = field(default_factory=Counter)
    reconnects: int = 0  # random drops done
    server_closes: Counter = field(default_factory=Counter)  # streams the server ended, by how
    idle_connected: int = 0
    idle_closed: int = 0  # idle streams the server ended during the run
    setup_seconds: float = 0.0
    load_seconds: float = 0.0  # posting the tasks until the end condition
    timed_out: bool = False
    problems: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float | None:
        """Return the nearest-rank percentile of the latencies (q in 0..100)."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    @property
    def p50(self) -> float | None:
        return self.percentile(50)

    @property
    def p95(self) -> float | None:
        return self.percentile(95)

    @property
    def p99(self) -> float | None:
        return self.percentile(99)

    @property
    def max(self) -> float | None:
        return max(self.latencies_ms, default=None)

    @property
    def server_errors(self) -> int:
        """Return how many responses the driver got with a 5xx status."""
        return sum(n for status, n in self.http_statuses.items() if status >= 500)

    def summary(self) -> dict[str, Any]:
        """Return the figures as plain JSON-ready values (no latency list)."""
        return {
            "transport": self.plan.transport,
            "sessions": self.plan.sessions,
            "images": self.plan.images,
            "events": self.events,
            "logEvents": self.log_events,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "max": self.max,
            "lost": self.lost,
            "undelivered": self.undelivered,
            "duplicated": self.duplicated,
            "outOfOrder": self.out_of_order,
            "unknown": self.unknown,
            "resets": self.resets,
            "tasks": {
                "total": self.tasks_total,
                "completed": self.tasks_completed,
                "failed": self.tasks_failed,
                "cancelled": self.tasks_cancelled,
                "notFinished": self.tasks_not_finished,
            },
            "terminalMissed": self.terminal_missed,
            "httpStatuses": {str(k): v for k, v in sorted(self.http_statuses.items())},
            "transportErrors": dict(self.transport_errors),
            "reconnects": self.reconnects,
            "serverCloses": dict(self.server_closes),
            "idle": {
                "asked": self.plan.idle_streams,
                "connected": self.idle_connected,
                "closedByServer": self.idle_closed,
            },
            "setupSeconds": round(self.setup_seconds, 2),
            "loadSeconds": round(self.load_seconds, 2),
            "timedOut": self.timed_out,
            "problems": self.problems[:50],
        }


# --- HTTP bookkeeping ------------------------------------------------------------------------


class HttpLedger:
    """Count every status the driver gets back, and every transport error."""

    def __init__(self) -> None:
        self.statuses: Counter = Counter()
        self.errors: Counter = Counter()

    async def on_response(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1


def png_bytes(seed: int, size: tuple[int, int] = (96, 72)) -> bytes:
    """Return a small PNG with a gradient and a coloured corner (so each upload differs)."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.paste((seed * 37 % 256, seed * 91 % 256, 128), (0, 0, 12, 12))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _moment(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


# --- One stream ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """One stored event as a stream received it."""

    id: str
    type: str
    task_id: str | None
    latency_ms: float


class _Dropped(Exception):
    """The driver dropped the connection on purpose (a planned random reconnect)."""


class _Ended(Exception):
    """The server ended the stream (WS close code or SSE end of response)."""

    def __init__(self, how: str):
        super().__init__(how)
        self.how = how


class LoadStream:
    """One client-scope stream that resumes from its last cursor whenever it is cut."""

    def __init__(
        self,
        *,
        base: str,
        token: str,
        client_app_id: str,
        transport: str,
        sse_client: httpx.AsyncClient,
        ledger: HttpLedger,
        rng: random.Random,
        drop_after: frozenset[int] = frozenset(),
    ):
        self.base = base
        self.token = token
        self.client_app_id = client_app_id
        self.transport = transport
        self.sse_client = sse_client
        self.ledger = ledger
        self.rng = rng
        self.drop_after = drop_after  # counts of stored events after which to drop
        self.received: list[Received] = []
        self.cursor: str | None = None
        self.connected = asyncio.Event()
        self.terminal_tasks: set[str] = set()
        self.last_event_at = time.monotonic()  # of the last stored event, or of creation
        self.drops = 0
        self.server_closes: Counter = Counter()
        self.resets = 0
        self.problems: list[str] = []
        self.ended_by_server = False

    # The loop: connect, read until cut, resume.
    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self.transport == "ws":
                    await self._run_ws()
                else:
                    await self._run_sse()
            except _Dropped:
                self.drops += 1
                failures = 0
                continue
            except _Ended as end:
                self.server_closes[end.how] += 1
                self.ended_by_server = True
            except (httpx.HTTPError, WebSocketException, OSError, TimeoutError) as exc:
                self.ledger.errors[type(exc).__name__] += 1
                self.server_closes[f"error:{type(exc).__name__}"] += 1
                self.ended_by_server = True
            failures += 1
            # A browser waits `retry` (3 s); a short pause keeps a failing server unhammered.
            await asyncio.sleep(min(3.0, 0.1 * 2**failures))

    def _record(self, payload: dict[str, Any], arrival: float) -> None:
        kind = payload.get("type")
        if kind == "connected":
            self.cursor = self.cursor or payload.get("id")
            self.connected.set()
            return
        if kind == "reset":
            self.resets += 1
            self.problems.append(f"{self.client_app_id}: reset to {payload.get('cursor')}")
            self.cursor = payload.get("cursor")
            return
        if kind not in STORED_TYPES:
            if kind not in ("heartbeat", "pong", "ack"):
                self.problems.append(f"{self.client_app_id}: unexpected message {payload}")
            return
        latency = (arrival - _moment(payload["timestamp"])) * 1000
        self.received.append(Received(payload["id"], kind, payload.get("taskId"), latency))
        self.cursor = payload["id"]
        if kind in TERMINAL_TYPES and payload.get("taskId"):
            self.terminal_tasks.add(payload["taskId"])
        self.last_event_at = time.monotonic()

    async def _maybe_drop(self) -> bool:
        """Return True when this is a planned drop point (after a short random pause)."""
        if len(self.received) not in self.drop_after or not self.received:
            return False
        self.drop_after = self.drop_after - {len(self.received)}
        # Events that arrive meanwhile are read by nobody: the resume must bring them.
        await asyncio.sleep(self.rng.uniform(0, 0.05))
        return True

    async def _run_ws(self) -> None:
        url = self.base.replace("http://", "ws://") + "/ws/progress/"
        query = f"?clientAppId={self.client_app_id}"
        if self.cursor:
            query += f"&cursor={self.cursor}"
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            socket: ClientConnection = await ws_connect(
                url + query,
                additional_headers=headers,
                open_timeout=60,
                ping_interval=None,
                max_size=None,
                max_queue=None,
            )
        except InvalidStatus as exc:
            self.ledger.statuses[exc.response.status_code] += 1
            raise
        self.ledger.statuses[101] += 1
        try:
            async for raw in socket:
                self._record(json.loads(raw), time.time())
                if await self._maybe_drop():
                    if self.rng.random() < 0.5:
                        socket.transport.abort()  # abrupt: no close frame
                    raise _Dropped()
            raise _Ended(f"ws:{socket.close_code}")
        except ConnectionClosed:
            raise _Ended(f"ws:{socket.close_code}") from None
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(), 2)

    async def _run_sse(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.cursor:
            headers["Last-Event-ID"] = self.cursor
        params = {"clientAppId": self.client_app_id}
        async with self.sse_client.stream(
            "GET", f"{self.base}/progress/client", params=params, headers=headers
        ) as response:
            if response.status_code != 200:
                await response.aread()
                if response.status_code == 429:
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                raise _Ended(f"sse:{response.status_code}")
            data: list[str] = []
            async for line in response.aiter_lines():
                if line == "":
                    if data:
                        self._record(json.loads("\n".join(data)), time.time())
                        data = []
                        if await self._maybe_drop():
                            raise _Dropped()  # leaving the block closes the connection
                    continue
                name, _, value = line.partition(":")
                if name == "data":
                    data.append(value.removeprefix(" "))
            raise _Ended("sse:end")


# --- The run -------------------------------------------------------------------------------


@dataclass
class _Booth:
    token: str
    client_app_id: str
    upload_id: str | None = None
    task_id: str | None = None
    stream: LoadStream | None = None


def _drop_plan(plan: LoadPlan, rng: random.Random) -> list[frozenset[int]]:
    """Spread `plan.reconnects` drops over the streams, at random event counts."""
    horizon = 2 + MIN_EVENTS_PER_JOB * plan.images  # stored events every stream will see
    share, extra = divmod(plan.reconnects, max(plan.sessions, 1))
    drops = []
    for index in range(plan.sessions):
        count = min(share + (index < extra), horizon - 1)
        drops.append(frozenset(rng.sample(range(1, horizon), count)))
    return drops


async def _start_session(api: httpx.AsyncClient) -> str:
    response = await api.post("/api/sessions")
    response.raise_for_status()
    return response.json()["token"]


async def _gather_limited(limit: int, factories: list[Callable[[], Any]]) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(factory: Callable[[], Any]) -> Any:
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(one(f) for f in factories), return_exceptions=True)


async def read_log(api: httpx.AsyncClient, token: str, client_app_id: str) -> list[dict]:
    """Return a client's whole stored log, read over REST page by page from the start."""
    events: list[dict] = []
    after: str | None = None
    while True:
        params = {"clientAppId": client_app_id} | ({"after": after} if after else {})
        response = await api.get(
            "/api/events", params=params, headers={"Authorization": f"Bearer {token}"}
        )
        response.raise_for_status()
        page = response.json()
        if not page["events"]:
            return events
        events += page["events"]
        after = page["cursor"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """How one stream's events compare with its log."""

    lost: int  # in the log before the stream's furthest event, never received
    undelivered: int  # in the log after the stream's furthest event (not yet, or never)
    duplicated: int
    out_of_order: int  # arrived after an event that comes later in the log
    unknown: int  # received, not in the log


def delivery_counts(received: list[str], log: list[str]) -> Delivery:
    """Compare the ids a stream received, in arrival order, with its log's ids.

    Duplicates and unknown ids are counted apart, not again as out of order. Events after the
    furthest one received are `undelivered` rather than lost: a run that ends (or gives up)
    while events are in flight has them, and a stream that misses a terminal event too.
    """
    position = {event_id: n for n, event_id in enumerate(log)}
    seen: set[str] = set()
    duplicated = out_of_order = unknown = 0
    furthest = -1
    for event_id in received:
        if event_id in seen:
            duplicated += 1
            continue
        seen.add(event_id)
        if event_id not in position:
            unknown += 1
            continue
        if position[event_id] < furthest:
            out_of_order += 1
        furthest = max(furthest, position[event_id])
    missing = [position[event_id] for event_id in log if event_id not in seen]
    return Delivery(
        lost=sum(n < furthest for n in missing),
        undelivered=sum(n > furthest for n in missing),
        duplicated=duplicated,
        out_of_order=out_of_order,
        unknown=unknown,
    )


async def run_load(
    base: str,
    plan: LoadPlan,
    *,
    before_tasks: Callable[[], None] | None = None,
    after_tasks: Callable[[], None] | None = None,
) -> LoadResult:
    """Run one booth load against `base`; `before_tasks`/`after_tasks` bracket the load."""
    rng = random.Random(plan.seed)
    result = LoadResult(plan=plan)
    ledger = HttpLedger()
    hooks = {"response": [ledger.on_response]}
    streams_total = plan.sessions + plan.idle_streams
    sse_limits = httpx.Limits(max_connections=streams_total + 10, max_keepalive_connections=0)
    api = httpx.AsyncClient(
        base_url=base, timeout=60, event_hooks=hooks, limits=httpx.Limits(max_connections=100)
    )
    sse = httpx.AsyncClient(
        timeout=httpx.Timeout(60, read=None), event_hooks=hooks, limits=sse_limits
    )
    runners: list[asyncio.Task] = []
    started = time.monotonic()
    try:
        booths, idle = await _set_up(api, sse, ledger, base, plan, rng, result)
        await _open_streams(booths, idle, plan, result, runners)
        result.setup_seconds = time.monotonic() - started

        if before_tasks:
            before_tasks()
        load_started = time.monotonic()
        await _post_tasks(api, booths, plan, result)
        await _wait_until_done(api, booths, plan, result)
        result.load_seconds = time.monotonic() - load_started
        if after_tasks:
            after_tasks()

        result.idle_closed = sum(s.ended_by_server for s in idle)
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        await _verify(api, booths, result)
    finally:
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        await api.aclose()
        await sse.aclose()
    result.http_statuses = ledger.statuses
    result.transport_errors = ledger.errors
    return result


async def _set_up(
    api: httpx.AsyncClient,
    sse: httpx.AsyncClient,
    ledger: HttpLedger,
    base: str,
    plan: LoadPlan,
    rng: random.Random,
    result: LoadResult,
) -> tuple[list[_Booth], list[LoadStream]]:
    """Start the sessions, upload a photo per booth, and make (not open) the streams."""
    idle_sessions = math.ceil(plan.idle_streams / STREAMS_PER_SESSION)
    tokens = await _gather_limited(
        10, [lambda: _start_session(api) for _ in range(plan.sessions + idle_sessions)]
    )
    if errors := [t for t in tokens if isinstance(t, BaseException)]:
        raise RuntimeError(f"{len(errors)} sessions could not start: {errors[0]!r}")
    booths = [_Booth(token, f"booth-{n}") for n, token in enumerate(tokens[: plan.sessions])]

    async def upload(n: int, booth: _Booth) -> None:
        files = {"image": (f"booth-{n}.png", png_bytes(n), "image/png")}
        headers = {"Authorization": f"Bearer {booth.token}"}
        response = await api.post("/api/uploads", files=files, headers=headers)
        response.raise_for_status()
        booth.upload_id = response.json()["uploadId"]

    uploaded = await _gather_limited(
        10, [lambda n=n, b=b: upload(n, b) for n, b in enumerate(booths)]
    )
    if errors := [u for u in uploaded if isinstance(u, BaseException)]:
        raise RuntimeError(f"{len(errors)} uploads failed: {errors[0]!r}")

    for n, (booth, drops) in enumerate(zip(booths, _drop_plan(plan, rng), strict=True)):
        booth.stream = LoadStream(
            base=base,
            token=booth.token,
            client_app_id=booth.client_app_id,
            transport=TRANSPORTS[n % 2] if plan.transport == "mixed" else plan.transport,
            sse_client=sse,
            ledger=ledger,
            rng=random.Random(rng.random()),
            drop_after=drops,
        )
    idle = [
        LoadStream(
            base=base,
            token=tokens[plan.sessions + n // STREAMS_PER_SESSION],
            client_app_id=f"idle-{n // STREAMS_PER_SESSION}",
            transport=plan.idle_transport or plan.transport,
            sse_client=sse,
            ledger=ledger,
            rng=random.Random(rng.random()),
        )
        for n in range(plan.idle_streams)
    ]
    return booths, idle


async def _open_streams(
    booths: list[_Booth],
    idle: list[LoadStream],
    plan: LoadPlan,
    result: LoadResult,
    runners: list[asyncio.Task],
) -> None:
    """Open the idle streams, then the booths' streams; wait for each one's `connected`.

    At most `plan.connect_concurrency` streams are being opened at a time; each stream's
    runner goes on reading (and resuming) until the run ends.
    """
    semaphore = asyncio.Semaphore(plan.connect_concurrency)

    async def open_one(stream: LoadStream) -> bool:
        async with semaphore:
            runners.append(asyncio.create_task(stream.run()))
            try:
                await asyncio.wait_for(stream.connected.wait(), 60)
            except TimeoutError:
                return False
            return True

    if idle:
        result.idle_connected = sum(await asyncio.gather(*(open_one(s) for s in idle)))
        if result.idle_connected < len(idle):
            result.problems.append(
                f"{len(idle) - result.idle_connected} idle streams got no `connected`"
            )
    streams = [b.stream for b in booths if b.stream]
    if (opened := sum(await asyncio.gather(*(open_one(s) for s in streams)))) < len(streams):
        raise RuntimeError(f"only {opened} of {len(streams)} load streams got `connected`")


async def _post_tasks(
    api: httpx.AsyncClient, booths: list[_Booth], plan: LoadPlan, result: LoadResult
) -> None:
    """Post every booth's generation task at once."""

    async def post(booth: _Booth) -> None:
        body = {
            "clientAppId": booth.client_app_id,
            "kind": "generation",
            "uploadId": booth.upload_id,
            "style": plan.style,
            "numberImages": plan.images,
        }
        response = await api.post(
            "/api/tasks", json=body, headers={"Authorization": f"Bearer {booth.token}"}
        )
        if response.status_code != 202:
            result.problems.append(
                f"{booth.client_app_id}: POST /api/tasks answered "
                f"{response.status_code}: {response.text[:300]}"
            )
            return
        booth.task_id = response.json()["taskId"]

    outcomes = await asyncio.gather(*(post(b) for b in booths), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            result.problems.append(f"POST /api/tasks failed: {outcome!r}")
    result.tasks_total = sum(b.task_id is not None for b in booths)


async def _task_status(api: httpx.AsyncClient, booth: _Booth) -> str:
    response = await api.get(
        f"/api/tasks/{booth.task_id}", headers={"Authorization": f"Bearer {booth.token}"}
    )
    response.raise_for_status()
    return response.json()["status"]


async def _wait_until_done(
    api: httpx.AsyncClient, booths: list[_Booth], plan: LoadPlan, result: LoadResult
) -> None:
    """Wait until every stream saw its task's terminal event.

    The fallback: a task whose stream has been silent for `poll_every` is read over REST (so a
    healthy run adds no requests); once every task still waited for is terminal there, the
    streams get `grace` seconds more.
    """
    deadline = time.monotonic() + plan.timeout
    grace_ends: float | None = None
    rest_status: dict[str, str] = {}
    next_poll = time.monotonic() + plan.poll_every
    while True:
        waiting = [b for b in booths if b.task_id and b.task_id not in b.stream.terminal_tasks]
        if not waiting:
            return
        now = time.monotonic()
        if now > deadline or (grace_ends is not None and now > grace_ends):
            result.timed_out = now > deadline
            return
        if now >= next_poll:
            next_poll = now + plan.poll_every
            silent = [b for b in waiting if now - b.stream.last_event_at >= plan.poll_every]
            statuses = await asyncio.gather(
                *(_task_status(api, b) for b in silent), return_exceptions=True
            )
            for booth, status in zip(silent, statuses, strict=True):
                rest_status[booth.task_id] = status if isinstance(status, str) else "?"
            terminal = [rest_status.get(b.task_id) in TERMINAL_TYPES for b in waiting]
            if grace_ends is None and all(terminal):
                grace_ends = now + plan.grace
        await asyncio.sleep(0.1)


async def _verify(api: httpx.AsyncClient, booths: list[_Booth], result: LoadResult) -> None:
    """Compare each stream with its log; read every task's final status."""
    for booth in booths:
        stream = booth.stream
        log = await read_log(api, booth.token, booth.client_app_id)
        if resets := [e for e in log if e["type"] == "reset"]:
            result.problems.append(f"{booth.client_app_id}: the log read gave {resets[0]}")
        log_ids = [e["id"] for e in log if e["type"] in STORED_TYPES]
        received_ids = [r.id for r in stream.received]
        delivery = delivery_counts(received_ids, log_ids)
        result.lost += delivery.lost
        result.undelivered += delivery.undelivered
        result.duplicated += delivery.duplicated
        result.out_of_order += delivery.out_of_order
        result.unknown += delivery.unknown
        result.log_events += len(log_ids)
        seen: set[str] = set()
        for received in stream.received:
            if received.id not in seen:
                seen.add(received.id)
                result.latencies_ms.append(received.latency_ms)
        result.events += len(seen)
        result.reconnects += stream.drops
        result.server_closes.update(stream.server_closes)
        result.resets += stream.resets
        result.problems += stream.problems[:5]
        if delivery != Delivery(lost=0, undelivered=0, duplicated=0, out_of_order=0, unknown=0):
            result.problems.append(
                f"{booth.client_app_id}: {delivery} (received {len(received_ids)}, log "
                f"{len(log_ids)}, drops {stream.drops}, closes {dict(stream.server_closes)})"
            )
        if booth.task_id is None:
            continue
        status = await _task_status(api, booth)
        if status == "completed":
            result.tasks_completed += 1
        elif status == "failed":
            result.tasks_failed += 1
        elif status == "cancelled":
            result.tasks_cancelled += 1
        else:
            result.tasks_not_finished += 1
            result.problems.append(f"{booth.client_app_id}: task {booth.task_id} is {status}")
        if status in TERMINAL_TYPES and booth.task_id not in stream.terminal_tasks:
            result.terminal_missed += 1
            result.problems.append(
                f"{booth.client_app_id}: the stream never got the "
                f"terminal event of {booth.task_id} ({status})"
            )


# --- The server under test -----------------------------------------------------------------

LOG_PATTERNS = {
    # Django logs a 5xx as ERROR django.request; daphne logs an application crash; the
    # built-in API logs the status a webhook delivery got (and retries).
    "5xx": re.compile(r"ERROR django\.request|Exception inside application|\bstatus=5\d\d\b"),
    "traceback": re.compile(r"Traceback \(most recent call last\)"),
    "never retrieved": re.compile(r"exception was never retrieved"),
    "database is locked": re.compile(r"database is locked"),
    "error lines": re.compile(r"^\S+ \S+ (ERROR|CRITICAL) "),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class LogFindings:
    """What the server logs say: counts per pattern and the first matching lines."""

    counts: dict[str, int]
    excerpts: list[str]

    @property
    def clean(self) -> bool:
        return not any(self.counts.values())

    def describe(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in self.counts.items())
        return counts + ("\n" + "\n".join(self.excerpts) if self.excerpts else "")


def scan_log(text: str, *, excerpts: int = 12, context: int = 6) -> LogFindings:
    """Count the lines of `text` matching LOG_PATTERNS; keep the first few with context."""
    counts = dict.fromkeys(LOG_PATTERNS, 0)
    lines = text.splitlines()
    kept: list[str] = []
    for number, line in enumerate(lines):
        hits = [name for name, pattern in LOG_PATTERNS.items() if pattern.search(line)]
        for name in hits:
            counts[name] += 1
        if hits and len(kept) < excerpts:
            kept.append("\n".join(lines[max(0, number - 1) : number + context])[:2000])
    return LogFindings(counts=counts, excerpts=kept)


@dataclass
class ServerUnderTest:
    """The running server: our process (and the API's when alone), with their log files."""

    mode: str
    base: str
    pid: int
    api_pid: int | None = None
    logs: list[Path] = field(default_factory=list)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def log_findings(self) -> LogFindings:
        return scan_log(self.log_text())


def _drain(pipe: io.BufferedReader, path: Path) -> threading.Thread:
    """Copy a process's pipe into a file in a thread (a full pipe would stall the server)."""

    def copy() -> None:
        with path.open("ab") as out:
            while chunk := pipe.read1(65536):
                out.write(chunk)
                out.flush()

    thread = threading.Thread(target=copy, name=f"drain-{path.name}", daemon=True)
    thread.start()
    return thread


@contextmanager
def booth_server(mode: str, folder: Path, **env: str) -> Iterator[ServerUnderTest]:
    """Serve the project in `mode` on fresh var dirs under `folder`; yield it running.

    Render time is 0 s per step (MOCKUP_API_STEP_SECONDS=0) unless `env` says otherwise;
    everything else is `make run`'s defaults.
    """
    from tests.live import base_process, daphne, free_port, server_env
    from tests.upstream_helpers import fresh_var_dir, standalone_api

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    env = {"MOCKUP_API_STEP_SECONDS": "0", **env}
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with contextlib.ExitStack() as stack:
        api_pid = None
        logs = []
        if mode == "upstream-alone":
            (folder / "api").mkdir(exist_ok=True)
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
            shared = {"MOCKUP_API_KEY": secrets.token_hex(16), "WEBHOOK_SECRETS": secret}
            api = stack.enter_context(
                standalone_api(
                    folder / "api", public_base_url=f"http://127.0.0.1:{port}", **shared, **env
                )
            )
            env = {**env, **shared, "MOCKUP_API_URL": f"{api.base}/mockup-api"}
            api_pid = api.process.pid
            logs.append(api.log)
        else:
            env = {**env, "MOCKUP_API_URL": ""}  # the built-in API, mounted in the process
        # A copy of a var dir migrated once per run (tests/upstream_helpers.py): fresh, and
        # no migration per case.
        environment = server_env(fresh_var_dir(folder / "server"), **env)
        log = folder / "server.log"
        logs.insert(0, log)
        drain: threading.Thread | None = None
        try:
            # daphne() pipes stderr (where the logs go) and never reads it: drain it here.
            with daphne(environment, port, serve=True) as base:
                process = base_process[base]
                drain = _drain(process.stderr, log)
                yield ServerUnderTest(
                    mode=mode, base=base, pid=process.pid, api_pid=api_pid, logs=logs
                )
        finally:
            if drain is not None:
                drain.join(15)  # the process has stopped: read its last lines
