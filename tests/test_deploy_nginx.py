"""The shipped deployment files work: deploy/nginx.conf, deploy/systemd/*, deploy/env.example.

Debian's nginx runs unprivileged with deploy/nginx.conf itself (only its ports, static folder
and log paths substituted) in front of two web processes and a worker that are started from the
systemd units' own ExecStart lines, with the environment of a tests/deployment.py deployment
(PostgreSQL, a private Redis, the built-in API served alone) standing in for
/etc/photobooth/env. A task then runs end to end through nginx: REST, SSE, WebSocket, result
downloads, and the upstream's fetches and webhooks.

Without nginx the tests skip, unless CI is set (.ci/run installs it): then they fail.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from jobs_app.worker import DRAIN_SECONDS
from tests.deployment import Deployment, Process, deployment
from tests.live import ROOT, SSEReader, free_port
from tests.upstream_helpers import Booth, contract_problems, result_problems, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.deployment]

DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
SERVICES = sorted(path.name for path in UNITS.glob("*.service"))
VENV_BIN = Path(sys.executable).parent
ENV_FILE = "/etc/photobooth/env"
# Streams must show their first event long before the first heartbeat (15 s) could push a
# buffered one out; a loaded CI machine still opens a stream well within this.
PROMPT_SECONDS = 5.0
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)


# --- The shipped files, read -------------------------------------------------------------------


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Return a unit file as {section: {key: [values]}}; keys may repeat, as systemd allows."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    text = path.read_text().replace("\\\n", " ")  # systemd's line continuations
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    """Return the single value of `key` in `section`, failing when it is missing or repeated."""
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}= should appear once, found {values}"
    return values[0]


def seconds(value: str) -> float:
    """Return a systemd time span such as `20`, `20s` or `1min` in seconds."""
    match = re.fullmatch(r"(\d+)\s*(s|sec|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return int(match[1]) * (60 if match[2] == "min" else 1)


def unit_command(name: str, instance: str = "") -> tuple[list[str], dict[str, str]]:
    """Return a unit's ExecStart as argv for this checkout, and its own Environment= values.

    The unit's install folder (WorkingDirectory) becomes this checkout: its `.venv/bin/` is
    the running venv's, and %i is the instance.
    """
    unit = read_unit(UNITS / name)
    home = one(unit, "Service", "WorkingDirectory")
    argv = shlex.split(one(unit, "Service", "ExecStart").replace("%i", instance))
    assert argv[0].startswith(f"{home}/.venv/bin/"), (name, argv[0])
    argv[0] = str(VENV_BIN / argv[0].removeprefix(f"{home}/.venv/bin/"))
    env: dict[str, str] = {}
    for entry in unit["Service"].get("Environment", []):
        for assignment in shlex.split(entry.replace("%i", instance)):
            key, _, value = assignment.partition("=")
            env[key] = value
    return argv, env


def nginx_directives(block: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", block, re.M)


def nginx_locations(text: str) -> dict[str, str]:
    """Return the shipped nginx.conf's location blocks by their pattern (none nest)."""
    return {
        pattern.strip(): body
        for pattern, body in re.findall(r"^\s*location\s+([^{]+)\{(.*?)^\s*\}", text, re.M | re.S)
    }


def nginx_seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m)?", value)
    assert match, f"unexpected nginx time {value!r}"
    return int(match[1]) * (60 if match[2] == "m" else 1)


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"deploy/nginx.conf should hold {old!r} once (the test swaps it)"
    return text.replace(old, new)


def nginx_site(listen_port: int, web_ports: list[int], static_root: Path, logs: Path) -> str:
    """Return deploy/nginx.conf for this machine: our ports, static folder and log folder."""
    text = (DEPLOY / "nginx.conf").read_text()
    server_line = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+([^;]*);\n", re.M)
    first = server_line.search(text)
    assert first, "deploy/nginx.conf should list its web processes as server 127.0.0.1:<port>"
    indent, options = first.group(1), first.group(2)
    ours = "".join(f"{indent}server 127.0.0.1:{port}{options};\n" for port in web_ports)
    text = text[: first.start()] + ours + server_line.sub("", text[first.start() :])
    text = replace_once(text, "listen 80;", f"listen 127.0.0.1:{listen_port};")
    text = replace_once(text, "alias /opt/photobooth/var/static/;", f"alias {static_root}/;")
    assert text.count("/var/log/nginx/") == 2, "access_log and error_log, once each"
    return text.replace("/var/log/nginx/", f"{logs}/")


# --- nginx -----------------------------------------------------------------------------------


def nginx_binary() -> str:
    """Return Debian's nginx; skip without it, or fail when CI requires it."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("nginx is not installed, and CI requires it (.ci/run installs it)")
    pytest.skip("nginx is not installed (apt-get install nginx)")


@dataclass
class Nginx:
    port: int
    folder: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> str:
        path = self.folder / "photobooth.access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def errors(self) -> str:
        logs = [self.folder / "photobooth.error.log", self.folder / "error.log"]
        return "\n".join(path.read_text(errors="replace")[-3000:] for path in logs if path.exists())


@contextmanager
def run_nginx(
    binary: str, folder: Path, port: int, web_ports: list[int], static_root: Path
) -> Iterator[Nginx]:
    """Run nginx unprivileged in `folder`, serving the shipped site on `port`."""
    folder.mkdir(parents=True)
    (folder / "photobooth.conf").write_text(nginx_site(port, web_ports, static_root, folder))
    # The main config an nginx package ships, cut down to what an unprivileged run needs: the
    # temp paths compiled into Debian's nginx are under /var/lib/nginx, which we cannot write.
    mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
    temp = "".join(f"    {kind}_temp_path {folder}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    # Started by root, nginx's workers would switch to `nobody`, who cannot read pytest's
    # private temporary folders (the static files); started by anyone else, this is ignored.
    user = "user root;\n" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(
        f"{user}worker_processes 1;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n    {mime}\n    default_type application/octet-stream;\n{temp}"
        f"    include {folder}/photobooth.conf;\n}}\n"
    )
    command = [binary, "-p", str(folder), "-e", str(folder / "error.log"),
               "-c", str(folder / "nginx.conf"),
               "-g", f"daemon off; pid {folder / 'nginx.pid'};"]  # fmt: skip
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, f"nginx -t refused the shipped config:\n{checked.stderr}"
    with (folder / "nginx.out").open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out)
    nginx = Nginx(port, folder)
    try:
        wait_for(lambda: _answers(f"{nginx.base}/static/none") or process.poll() is not None,
                 "nginx to answer", 10)  # fmt: skip
        assert process.poll() is None, f"nginx exited:\n{nginx.errors()}"
        yield nginx
    finally:
        process.terminate()  # SIGTERM: nginx's fast shutdown, streams included
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return True


# --- The deployment, started from the units ---------------------------------------------------


def start_unit(setup: Deployment, name: str, instance: str = "", **args: str) -> Process:
    """Start a unit's ExecStart in this checkout, the deployment's env as its EnvironmentFile.

    `args` replace option values (`port="8123"` swaps `--port 8100`).
    """
    argv, unit_env = unit_command(name, instance)
    for option, value in args.items():
        argv[argv.index(f"--{option}") + 1] = value
    log = setup.var / "logs" / f"{name.replace('@', f'@{instance}')}.log"
    with log.open("ab") as out:
        # As with systemd, the EnvironmentFile's values win over the unit's Environment=.
        process = subprocess.Popen(
            argv, cwd=ROOT, env={**unit_env, **setup.env}, stdout=out, stderr=out
        )
    return Process(name, process, log)


def wait_until_serving(process: Process, url: str) -> None:
    def up() -> bool:
        if not process.alive:
            pytest.fail(f"{process.name} exited:\n{process.tail()}")
        return _answers(url)

    wait_for(up, f"{process.name} to answer {url}", 30)


def wait_until_registered(setup: Deployment, worker: Process) -> None:
    def registered() -> bool:
        if not worker.alive:
            pytest.fail(f"{worker.name} exited:\n{worker.tail()}")
        rows = setup.sql("SELECT count(*) FROM jobs_app_worker WHERE name LIKE %s",
                         f"%:{worker.process.pid}")  # fmt: skip
        return rows[0][0] > 0

    wait_for(registered, f"{worker.name} to register", 30, every=0.1)


def stop_within_timeout(name: str, process: Process) -> float:
    """Stop a process as systemd does (KillSignal=SIGTERM); return how long it took."""
    started = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    limit = seconds(one(read_unit(UNITS / name), "Service", "TimeoutStopSec"))
    try:
        process.process.wait(limit)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"{name} outlived TimeoutStopSec={limit}:\n{process.tail()}")
    return time.monotonic() - started


@dataclass
class Stack:
    setup: Deployment
    nginx: Nginx
    web_ports: list[int]

    @property
    def base(self) -> str:
        return self.nginx.base

    def logs(self) -> str:
        return f"{self.setup.logs()}\n--- nginx\n{self.nginx.errors()}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """nginx with the shipped config, before two web processes and a worker from the units."""
    binary = nginx_binary()
    tmp = tmp_path_factory.mktemp("deploy-nginx")
    nginx_port, web_ports = free_port(), [free_port(), free_port()]
    # No web process or worker from the harness (webs=0, workers=0): the units start them.
    with deployment(tmp, webs=0, workers=0, public_base_url=f"http://127.0.0.1:{nginx_port}",
                    MOCKUP_API_STEP_SECONDS="0.1") as (setup, _):  # fmt: skip
        # A release step (docs/operations.md): nginx serves /static/ from its output.
        subprocess.run([sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"],
                       cwd=ROOT, env=setup.env, check=True)  # fmt: skip
        for port in web_ports:
            web = start_unit(setup, "photobooth-web@.service", str(port))
            web.base = f"http://127.0.0.1:{port}"
            setup.webs.append(web)  # stop_all() stops it, logs() shows it
            wait_until_serving(web, f"{web.base}/health")
        worker = start_unit(setup, "photobooth-worker.service")
        setup.workers.append(worker)
        wait_until_registered(setup, worker)
        with run_nginx(binary, tmp / "nginx", nginx_port, web_ports, setup.var / "static") as nginx:
            yield Stack(setup, nginx, web_ports)


# --- Tests: the files alone -------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_each_unit_runs_as_its_own_user_restarts_and_stops_gently(name):
    unit = read_unit(UNITS / name)

    assert one(unit, "Service", "User") not in ("", "root")
    assert one(unit, "Service", "EnvironmentFile") == ENV_FILE
    assert one(unit, "Service", "WorkingDirectory").startswith("/")
    assert one(unit, "Service", "Restart") == "always"
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    stop = seconds(one(unit, "Service", "TimeoutStopSec"))
    assert stop >= 15
    if "worker" in name:
        # It drains submissions in flight for DRAIN_SECONDS, then frees its claims.
        assert stop > DRAIN_SECONDS + 5
    assert one(unit, "Unit", "PartOf") == "photobooth.target"
    assert one(unit, "Install", "WantedBy") == "photobooth.target"


def test_systemd_accepts_every_unit_apart_from_the_missing_install_folder(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    names = []
    for name in [*SERVICES, "photobooth.target"]:
        # A template is verified through an instance of it.
        instance = name.replace("@.", "@8001.")
        (tmp_path / instance).symlink_to(UNITS / name)
        names.append(str(tmp_path / instance))
    result = subprocess.run([analyze, "verify", *names], capture_output=True, text=True)
    # This machine has no /opt/photobooth: that complaint is expected, no other.
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if line.strip() and "/opt/photobooth/.venv/bin/" not in line]  # fmt: skip

    assert not complaints, complaints


def test_the_nginx_limits_and_timeouts_match_the_settings():
    text = (DEPLOY / "nginx.conf").read_text()
    locations = nginx_locations(text)
    websocket, sse = locations["/ws/"], locations["~ ^/(progress|api/sse)/"]
    long_poll = locations["= /api/events"]
    (body_limit,) = nginx_directives(text, "client_max_body_size")

    assert body_limit.endswith("m")
    assert int(body_limit[:-1]) * 1024 * 1024 == settings.REQUEST_BODY_MAX_BYTES
    # A socket survives one missed heartbeat at least; a stream lives its whole lifetime.
    (ws_timeout,) = nginx_directives(websocket, "proxy_read_timeout")
    assert nginx_seconds(ws_timeout) > 2 * settings.STREAM_HEARTBEAT_SECONDS
    assert nginx_directives(websocket, "proxy_set_header")[:2] == [
        "Upgrade $http_upgrade",
        "Connection $connection_upgrade",
    ]
    (sse_timeout,) = nginx_directives(sse, "proxy_read_timeout")
    assert nginx_seconds(sse_timeout) >= settings.STREAM_MAX_SECONDS
    assert nginx_directives(sse, "proxy_buffering") == ["off"]
    assert nginx_directives(sse, "gzip") == ["off"]
    (poll_timeout,) = nginx_directives(long_poll, "proxy_read_timeout")
    assert nginx_seconds(poll_timeout) > settings.EVENT_POLL_MAX_WAIT_SECONDS


def test_env_example_names_only_documented_settings_and_holds_no_secret():
    text = (DEPLOY / "env.example").read_text()
    assignments = re.findall(r"^#?([A-Z][A-Z0-9_]+)=(.*)$", text, re.M)
    operations = (ROOT / "docs" / "operations.md").read_text()

    assert {"DATABASE_URL", "REDIS_URL", "MOCKUP_API_URL", "PUBLIC_BASE_URL"} <= {
        key for key, _ in assignments
    }
    undocumented = [key for key, _ in assignments if f"`{key}`" not in operations]
    assert not undocumented, undocumented
    secret = re.compile(r"SECRET|_KEY$|TOKEN|PASSWORD")
    for key, value in assignments:
        if secret.search(key):
            assert "CHANGE-ME" in value, f"{key} should be a placeholder"
    assert "CHANGE-ME@" in dict(assignments)["DATABASE_URL"]


# --- Tests: the deployment through nginx ------------------------------------------------------


def test_the_other_units_start_their_process_and_stop_within_their_timeout(stack):
    # photobooth-web@ and photobooth-worker already run the stack (see the fixture).
    worker = start_unit(stack.setup, "photobooth-worker@.service", "2")
    wait_until_registered(stack.setup, worker)
    port = free_port()
    api = start_unit(stack.setup, "photobooth-mockup-api.service", port=str(port))
    # Hosted files need no key: a 404 for an unknown one means the API is up.
    wait_until_serving(api, f"http://127.0.0.1:{port}/mockup-api/v2/files/{'0' * 32}.png")

    assert stop_within_timeout("photobooth-worker@.service", worker) < DRAIN_SECONDS + 5
    stop_within_timeout("photobooth-mockup-api.service", api)


def test_a_generation_task_runs_end_to_end_through_nginx(stack):
    booth = Booth(stack.base, "nginx-booth")
    upload = booth.upload()
    task = booth.generation(upload, number_images=2)
    task_id = task["taskId"]
    websocket = WebSocketFollower(stack, booth, task_id)
    with websocket:
        sse_events = follow_sse(booth, f"/progress/{task_id}")
    finished = booth.wait_for_task(task_id)
    stored = booth.events(finished)
    problems = contract_problems(finished, stored) + result_problems(booth, finished)
    upstream_id = finished["upstreamId"]
    # The upstream's webhook may land a moment after the socket finished the task.
    deliveries = wait_for(lambda: stack.setup.sql(
        "SELECT verdict, outcome FROM jobs_app_webhookdelivery WHERE upstream_task_id = %s",
        upstream_id), "the upstream's webhook", 30)  # fmt: skip
    access = stack.nginx.access_log()
    served_by = {int(port) for port in re.findall(r"upstream=[^ ]*?127\.0\.0\.1:(\d+)", access)}

    assert finished["status"] == "completed", (finished, stack.logs())
    assert not problems, (problems, stack.logs())
    assert not websocket.errors, websocket.errors
    stored_ids = [event["id"] for event in stored]
    assert [event["id"] for event in sse_events] == stored_ids
    assert [event["id"] for event in websocket.events] == stored_ids
    assert websocket.close_code == 1000
    # The upstream fetched the photo and called back through nginx, signature intact.
    assert re.search(r'"GET /media/uploads/\S+ HTTP/1\.1" 200 .*upstream=127', access), access
    assert re.search(r'"POST /webhooks/mockup-api HTTP/1\.1" 20[24] .*upstream=127', access)
    assert ("verified", "applied") in deliveries or ("verified", "no_change") in deliveries
    # least_conn spread the session's requests and streams over both web processes.
    assert served_by == set(stack.web_ports), access


def test_sse_through_nginx_is_not_buffered(stack):
    booth = Booth(stack.base, "sse-booth")
    upload = booth.upload()
    # Clients ask for gzip; nginx must still stream the events one by one, unencoded.
    headers = {**booth.http.headers, "Accept-Encoding": "gzip"}
    started = time.monotonic()
    with httpx.stream("GET", f"{stack.base}/progress/session", headers=headers,
                      timeout=STREAM_TIMEOUT) as response:  # fmt: skip
        reader = SSEReader(response)
        connected = reader.event()
        connected_after = time.monotonic() - started
        created = time.monotonic()
        task = booth.generation(upload, number_images=1, client_app_id="sse-live")
        queued = reader.event()
        queued_after = time.monotonic() - created

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert connected["type"] == "connected"
    assert connected_after < PROMPT_SECONDS
    assert (queued["type"], queued["taskId"]) == ("queued", task["taskId"])
    assert queued_after < PROMPT_SECONDS
    booth.wait_for_task(task["taskId"])  # leave nothing running for the next test


def test_a_body_over_the_request_limit_gets_the_contract_s_413_from_nginx(stack):
    booth = Booth(stack.base, "big-booth")
    body = b"\0" * (settings.REQUEST_BODY_MAX_BYTES + 1)
    response = booth.http.post(
        "/api/uploads", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    # nginx logs the request once it has drained the rest of the body (lingering close),
    # which may be after the client has the answer.
    refused = wait_for(lambda: [line for line in stack.nginx.access_log().splitlines()
                                if '"POST /api/uploads HTTP/1.1" 413' in line],
                       "nginx to log the refusal", 10)  # fmt: skip

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "file_too_large"
    # nginx answered itself: no web process saw the body.
    assert refused[-1].split("upstream=")[1].startswith("- "), refused


def test_static_files_come_from_the_collectstatic_folder_not_from_django(stack):
    path = "admin/css/base.css"
    response = httpx.get(f"{stack.base}/static/{path}", timeout=10)

    assert response.status_code == 200
    assert response.content == (stack.setup.var / "static" / path).read_bytes()
    assert "max-age=3600" in response.headers["cache-control"]  # nginx's `expires 1h`
    assert not any(f"/static/{path}" in web.log.read_text() for web in stack.setup.webs)


def test_metrics_stay_off_the_public_address_and_name_each_web_unit(stack):
    response = httpx.get(f"{stack.base}/metrics", timeout=10)

    assert response.status_code == 404
    for port in stack.web_ports:
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert f'process="web-{port}"' in metrics  # the unit's METRICS_PROCESS_NAME=web-%i


# --- Stream helpers ---------------------------------------------------------------------------


def follow_sse(booth: Booth, path: str) -> list[dict[str, Any]]:
    """Read a task's SSE stream through nginx until its terminal event; return the events."""
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{booth.base}{path}", headers=booth.http.headers,
                      timeout=STREAM_TIMEOUT) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        reader = SSEReader(response)
        while True:
            event = reader.event()
            if event["type"] in ("connected", "reset"):
                continue
            events.append(event)
            if event["type"] in ("completed", "failed", "cancelled"):
                return events


class WebSocketFollower:
    """Follow one task over the WebSocket through nginx, in a thread, until the server closes."""

    def __init__(self, stack: Stack, booth: Booth, task_id: str) -> None:
        self.url = f"ws://127.0.0.1:{stack.nginx.port}/ws/progress/?taskId={task_id}"
        # A bearer token and no Origin, as a non-browser client connects.
        self.headers = {"Authorization": booth.http.headers["Authorization"]}
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.close_code: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WebSocketFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(60)
        if self._thread.is_alive():
            self.errors.append("the socket was still open 60 s after the SSE stream ended")

    def _run(self) -> None:
        try:
            with connect(self.url, additional_headers=self.headers, open_timeout=10) as socket:
                while True:
                    try:
                        message = json.loads(socket.recv(timeout=60))
                    except ConnectionClosedOK:
                        self.close_code = socket.close_code
                        return
                    if message.get("type") not in ("connected", "heartbeat", "reset"):
                        self.events.append(message)
        except Exception as exc:  # reported by the test, not lost in the thread
            self.errors.append(repr(exc))
