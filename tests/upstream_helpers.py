"""Helpers for the upstream tests (tests/test_upstream_*.py): real processes, real HTTP.

Our server runs as `manage.py serve` (or plain daphne) in a var dir of its own, logging to a
file there (a pipe nobody reads would stall a chatty server). A var dir starts as a copy of
one migrated template, so every var dir shares the template's SECRET_KEY and with it the
derived MOCKUP_API_KEY and webhook secret, read once from the settings of a real process.

Checks return lists of problems instead of asserting, so that test modules can assert on
them (`assert not problems, problems`) and pytest shows the whole list.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import itertools
import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import image_bytes
from tests.live import ROOT, free_port, server_env

TERMINAL = ("completed", "failed", "cancelled")
JOB_FINAL = ("jobCompleted", "jobFailed")
# Long enough for a loaded CI machine; waits poll and return as soon as the state is reached.
TIMEOUT = 60.0
PROGRESS_MIN_GAP_MS = 250


# --- Var dirs and processes ------------------------------------------------------------------


@cache
def _template() -> Path:
    """Migrate one var dir per test run; later var dirs are copies of it."""
    folder = Path(tempfile.mkdtemp(prefix="photobooth-upstream-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    env = server_env(folder)
    command = [sys.executable, "manage.py", "migrate", "--no-input", "-v0"]
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    return folder


def fresh_var_dir(path: Path) -> Path:
    """Return `path` as a migrated var dir (database and secret key of the template)."""
    shutil.copytree(_template(), path)
    return path


@cache
def derived_api_key() -> str:
    """Return the MOCKUP_API_KEY every var dir derives from the template's SECRET_KEY."""
    code = "from django.conf import settings; print(settings.MOCKUP_API_KEY)"
    command = [sys.executable, "manage.py", "shell", "-c", code]
    output = subprocess.run(
        command, cwd=ROOT, env=server_env(_template()), check=True, capture_output=True, text=True
    )
    return output.stdout.strip().splitlines()[-1]


@dataclass
class Server:
    """One of our server processes: its base URL, process and log file."""

    base: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the process: no shutdown code runs, as in a crash."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def wait_until_up(probe: str, process: subprocess.Popen, log: Path, what: str) -> None:
    """Poll `probe` until it answers below 500; fail with the log if the process dies first."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(probe, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def serve(
    var_dir: Path, *, port: int | None = None, worker: bool = True, **env: str
) -> Iterator[Server]:
    """Run `manage.py serve` (a worker starts at once) on `port` with extra env.

    Without MOCKUP_API_URL in `env` it serves the built-in API too; `worker=False` serves the
    web only (`serve --no-worker`). The log file is appended to, so a restarted server keeps
    the earlier lines.
    """
    port = port or free_port()
    env = {"MOCKUP_API_URL": "", "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **env}
    environment = server_env(var_dir, **env)
    command = [sys.executable, "manage.py", "serve", "--port", str(port)]
    if not worker:
        command.append("--no-worker")
    log = var_dir / "server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/health", process, log, "our server")
        yield Server(base, process, log)
    finally:
        _stop(process)


@contextmanager
def standalone_api(var_dir: Path, *, public_base_url: str, **env: str) -> Iterator[Server]:
    """Run `manage.py run_mockup_api` alone; it calls our webhooks at `public_base_url`."""
    port = free_port()
    environment = server_env(var_dir, PUBLIC_BASE_URL=public_base_url, **env)
    command = [sys.executable, "manage.py", "run_mockup_api", "--port", str(port)]
    log = var_dir / "mockup_api.log"
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        # Hosted files need no key and spend no rate-limit token: a 404 means it is up.
        wait_until_up(f"{base}/mockup-api/v2/files/{'0' * 32}.png", process, log, "the API")
        yield Server(base, process, log)
    finally:
        _stop(process)


class FlakyNetwork:
    """A TCP proxy in threads between our server and the upstream, with two faults on demand.

    `cut_sockets()` resets every open event-socket (`/v2/socket`) connection at once; while
    `refuse_posts` is set, a request starting with POST gets its connection reset instead of
    reaching the upstream (submissions fail as on a broken network). Everything else passes.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.refuse_posts = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        pair = (client, upstream)
        backward = threading.Thread(target=self._pipe, args=(upstream, client), daemon=True)
        backward.start()
        self._pipe(client, upstream, forward=True)
        backward.join(10)
        with self._lock:
            if pair in self._sockets:
                self._sockets.remove(pair)
        for end in pair:
            end.close()

    def _pipe(self, source: socket.socket, sink: socket.socket, forward: bool = False) -> None:
        pair = (source, sink)
        try:
            while data := source.recv(65536):
                if forward and self.refuse_posts and data.startswith(b"POST "):
                    return
                if forward and data.startswith(b"GET ") and b"/v2/socket" in data[:200]:
                    with self._lock:
                        self._sockets.append(pair)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in pair:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut_sockets(self) -> int:
        """Reset every open event-socket connection; return how many there were."""
        with self._lock:
            pairs, self._sockets = self._sockets, []
        for pair in pairs:
            for end in pair:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
        return len(pairs)

    def __enter__(self) -> FlakyNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        self.cut_sockets()


@dataclass
class FixedAnswers:
    """A tiny HTTP server answering every request with one status (see `answering`)."""

    base: str
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)

    def posts(self) -> int:
        return sum(method == "POST" for method, _ in self.requests)


@contextmanager
def answering(status: int, body: bytes | None = None) -> Iterator[FixedAnswers]:
    """Run a tiny HTTP server that answers every request with `status` and `body` (by default
    a JSON error)."""
    server = FixedAnswers(base="")
    error = {"error": {"code": "test", "message": f"always {status}"}}
    content = json.dumps(error).encode() if body is None else body

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            server.requests.append((self.command, self.path))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass  # keep the test output clean

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


def read_tasks(var_dir: Path) -> dict[str, dict[str, Any]]:
    """Return the dispatcher's view of every task (status, attempts, upstream id, ...)."""
    uri = f"file:{var_dir / 'photobooth.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=20)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT id, status, attempts, upstream_id, claimed_at, next_attempt_at, last_error,"
            " error_code FROM jobs_app_task"
        ).fetchall()
    return {_uuid(row["id"]): dict(row) for row in rows}


def _uuid(raw: str) -> str:
    """Return a UUID as the API spells it (SQLite stores it without dashes)."""
    raw = raw.replace("-", "")
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


# --- The mockup API, seen from outside --------------------------------------------------------


@dataclass
class UpstreamView:
    """The mockup API's own view of things, read with its API key."""

    root: str  # e.g. http://127.0.0.1:8000/mockup-api
    api_key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def connections(self) -> dict[str, Any]:
        response = httpx.get(f"{self.root}/v2/debug/connections", headers=self.auth, timeout=10)
        response.raise_for_status()
        return response.json()

    def generation(self, upstream_id: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.root}/v2/generation-tasks/{upstream_id}", headers=self.auth, timeout=10
        )
        response.raise_for_status()
        return response.json()["data"]

    def mockup(self, upstream_id: str) -> dict[str, Any] | None:
        response = httpx.get(
            f"{self.root}/v2/mockup-tasks", params={"id": upstream_id}, headers=self.auth
        )
        response.raise_for_status()
        return next(iter(response.json()["data"]), None)

    def socket_url(self, app_id: str) -> str:
        return self.root.replace("http://", "ws://") + f"/v2/socket?app_id={app_id}"


class ConnectionWatch:
    """Poll /v2/debug/connections in a thread while a test runs; keep every snapshot."""

    def __init__(self, upstream: UpstreamView, every: float = 0.05):
        self.upstream = upstream
        self.every = every
        self.snapshots: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.snapshots.append(self.upstream.connections())
            except httpx.HTTPError as exc:
                self.errors.append(repr(exc))
            self._stop.wait(self.every)

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def wait_for(
    check: Callable[[], Any], what: str, timeout: float = TIMEOUT, every: float = 0.05
) -> Any:
    """Poll `check` until it returns something truthy; return that, or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        if value := check():
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def our_app_ids(upstream: UpstreamView) -> set[str]:
    """Return the app ids with an open socket (ours are `photobooth-<host>-<pid>-<hex>`)."""
    return {app for app, count in upstream.connections()["apps"].items() if count}


# --- A booth: one session of our API ----------------------------------------------------------


@dataclass
class Booth:
    """One session (bearer token) of our API, with helpers to follow its tasks."""

    base: str
    client_app_id: str
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.base, timeout=30)
        session = self.http.post("/api/sessions")
        assert session.status_code == 201, session.text
        self.http.headers["Authorization"] = f"Bearer {session.json()['token']}"

    def reconnect(self) -> None:
        """Drop pooled connections (after a server restart), keeping the session's token."""
        headers = self.http.headers
        self.http.close()
        self.http = httpx.Client(base_url=self.base, timeout=30, headers=headers)

    def upload(self, content: bytes | None = None) -> str:
        content = content or image_bytes("JPEG", (96, 72))
        response = self.http.post("/api/uploads", files={"image": ("me.jpg", content)})
        assert response.status_code == 201, response.text
        return response.json()["uploadId"]

    def create(self, kind: str, client_app_id: str | None = None, **fields: Any) -> dict:
        body = {"clientAppId": client_app_id or self.client_app_id, "kind": kind, **fields}
        response = self.http.post("/api/tasks", json=body)
        assert response.status_code == 202, response.text
        return response.json()

    def wait_for_catalog(self) -> None:
        """Wait until the worker has read the product catalog: until then a mockup task is
        refused (503 `upstream_unavailable`), and a server just started may not have it yet."""
        wait_for(lambda: self.http.get("/api/products").status_code == 200,
                 "the product catalog", 30, every=0.1)  # fmt: skip

    def generation(self, upload_id: str, number_images: int = 2, **fields: Any) -> dict:
        return self.create(
            "generation", uploadId=upload_id, style="pop-art", numberImages=number_images, **fields
        )

    def enhancement(self, client_app_id: str | None = None, **source: Any) -> dict:
        return self.create("enhancement", client_app_id, **source)

    def mockup(
        self,
        upload_id: str,
        variant_ids: list[int],
        product_id: int = 71,
        client_app_id: str | None = None,
    ) -> dict:
        self.wait_for_catalog()
        return self.create(
            "mockup",
            client_app_id,
            uploadId=upload_id,
            productId=product_id,
            variantIds=variant_ids,
            placement="front",
        )

    def task(self, task_id: str) -> dict:
        response = self.http.get(f"/api/tasks/{task_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def cancel(self, task_id: str) -> dict:
        response = self.http.post(f"/api/tasks/{task_id}/cancel")
        assert response.status_code == 202, response.text
        return response.json()

    def wait_for_task(
        self, task_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = TIMEOUT
    ) -> dict:
        """Poll the task until its status is one of `statuses`; return it."""
        last: dict = {}

        def reached() -> dict | None:
            nonlocal last
            last = self.task(task_id)
            return last if last["status"] in statuses else None

        try:
            return wait_for(reached, f"task {task_id} to be {statuses}", timeout, every=0.1)
        except pytest.fail.Exception:
            pytest.fail(f"task {task_id} stayed {last.get('status')}: {json.dumps(last)[:3000]}")

    def events(self, task: dict) -> list[dict]:
        """Return every stored event of a task, from its cursor on (reading page by page)."""
        cursor, found = task["cursor"], []
        while True:
            page = self.http.get("/api/events", params={"after": cursor}).json()
            assert not any(e["type"] == "reset" for e in page["events"]), page
            found += [e for e in page["events"] if e["taskId"] == task["taskId"]]
            if not page["events"]:
                return found
            cursor = page["cursor"]

    def wait_for_event(
        self, task: dict, match: Callable[[dict], bool], timeout: float = TIMEOUT
    ) -> dict:
        """Long-poll the session's log until an event of the task matches; return it."""
        cursor = task["cursor"]
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            wait = max(0.0, min(5.0, left))
            page = self.http.get("/api/events", params={"after": cursor, "wait": wait}).json()
            for event in page["events"]:
                if event["taskId"] == task["taskId"] and match(event):
                    return event
            cursor = page["cursor"]
        pytest.fail(f"no matching event of task {task['taskId']} within {timeout} s")

    def download(self, url: str) -> httpx.Response:
        return self.http.get(url)


# --- Checks -----------------------------------------------------------------------------------

_JOB_LETTERS = {
    "initiating": "i",
    "started": "s",
    "progress": "p",
    "preview": "v",
    "jobCompleted": "C",
    "jobFailed": "F",
}
# Contract section 3: per job initiating, started, progress*, preview* (interleaved), then one
# of jobCompleted or jobFailed. A job may fail before it starts (its input was unavailable);
# mockup jobs may skip initiating and started (section 7).
_GENERATION_JOB = re.compile(r"^(is[pv]*[CF]?|i?F?)$")
_MOCKUP_JOB = re.compile(r"^i?s?[pv]*[CF]?$")


def _moment(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def contract_problems(task: dict, events: list[dict]) -> list[str]:
    """Return how a task's event log breaks the contract's order rules (empty when it holds)."""
    problems: list[str] = []
    tid = task["taskId"][:8]
    types = [e["type"] for e in events]
    if not events:
        return [f"{tid}: no events"]
    seqs = [int(e["id"].rpartition("-")[2]) for e in events]
    if seqs != sorted(set(seqs)):
        problems.append(f"{tid}: events out of log order or repeated: {seqs}")
    for event in events:
        if not event["timestamp"].endswith("Z"):
            problems.append(f"{tid}: timestamp without Z: {event}")
        if event["clientAppId"] != task["clientAppId"]:
            problems.append(f"{tid}: event of another client: {event}")
        if (event["jobId"] is None) == (event["type"] in _JOB_LETTERS):
            problems.append(f"{tid}: jobId does not match the event type: {event}")
    if types[0] != "queued":
        problems.append(f"{tid}: first event is {types[0]}, not queued")
    first_other = next((n for n, t in enumerate(types) if t != "queued"), len(types))
    if "queued" in types[first_other:]:
        problems.append(f"{tid}: queued after the task left the queue: {types}")
    terminal = [t for t in types if t in TERMINAL]
    if len(terminal) != 1 or types[-1] not in TERMINAL:
        problems.append(f"{tid}: terminal events {terminal}, last event {types[-1]}")
    job_pattern = _MOCKUP_JOB if task["kind"] == "mockup" else _GENERATION_JOB
    by_job: dict[int, list[dict]] = {}
    for event in events:
        if event["type"] in _JOB_LETTERS:
            by_job.setdefault(event["jobIndex"], []).append(event)
    for index, job_events in sorted(by_job.items()):
        letters = "".join(_JOB_LETTERS[e["type"]] for e in job_events)
        if not job_pattern.fullmatch(letters):
            problems.append(f"{tid}: job {index} events out of order: {letters}")
        moments = [_moment(e["timestamp"]) for e in job_events if e["type"] == "progress"]
        for earlier, later in itertools.pairwise(moments):
            gap_ms = (later - earlier).total_seconds() * 1000
            if gap_ms < PROGRESS_MIN_GAP_MS:
                problems.append(f"{tid}: job {index} progress events {gap_ms:.0f} ms apart")
    if types[-1] == "completed":
        completed = events[-1]
        finals = {i: [e for e in evs if e["type"] in JOB_FINAL] for i, evs in by_job.items()}
        if sorted(finals) != list(range(len(task["jobs"]))) or any(
            len(f) != 1 for f in finals.values()
        ):
            problems.append(f"{tid}: completed, but not every job had exactly one final event")
        if completed["completedJobs"] != types.count("jobCompleted"):
            problems.append(f"{tid}: completedJobs {completed['completedJobs']} is wrong")
        if completed["totalJobs"] != len(task["jobs"]):
            problems.append(f"{tid}: totalJobs {completed['totalJobs']} is wrong")
        if task["kind"] == "mockup" and types[-2:] != ["redirect", "completed"]:
            problems.append(f"{tid}: a mockup must end with redirect, completed: {types[-3:]}")
    if task["kind"] != "mockup" and "redirect" in types:
        problems.append(f"{tid}: redirect for a {task['kind']} task")
    if types.count("redirect") > 1:
        problems.append(f"{tid}: more than one redirect")
    return problems


def result_problems(booth: Booth, task: dict) -> list[str]:
    """Return how a completed task's results fail to be real PNGs in our own storage."""
    problems = []
    tid = task["taskId"][:8]
    for job in task["jobs"]:
        result = job["result"]
        if job["status"] != "completed" or result is None:
            problems.append(f"{tid}: job {job['index']} is {job['status']} without a result")
            continue
        if not result["url"].startswith("/media/results/"):
            problems.append(f"{tid}: job {job['index']} result is not ours: {result['url']}")
            continue
        response = booth.download(result["url"])
        if response.status_code != 200:
            problems.append(f"{tid}: {result['url']} answered {response.status_code}")
            continue
        image = Image.open(io.BytesIO(response.content))
        got = (image.format, image.size, len(response.content), response.headers["Content-Type"])
        want = ("PNG", (result["width"], result["height"]), result["size"], "image/png")
        if got != want or result["contentType"] != "image/png":
            problems.append(f"{tid}: job {job['index']} result {got}, reported {want}")
    return problems
