"""A multi-process deployment on this machine, for tests: every part a real process.

PostgreSQL (a fresh database per deployment), a private Redis server (so a test may stop it
without touching anyone else's), the built-in mockup API served alone (`run_mockup_api`), web
processes (plain daphne: the web only) and workers (`manage.py worker`), all sharing one var
dir (secret key, media). Logs go to files in `<var>/logs/`, shown when something fails.

The mockup API key and webhook secret are fresh per deployment, so its rate-limit and breaker
state in Redis belong to it alone.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.live import ROOT, free_port
from tests.upstream_helpers import wait_for, wait_until_up

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Short leases, so takeovers happen within seconds in tests (production: 20 s and 5 s).
TEST_LEASE = {"WORKER_LEASE_SECONDS": "4", "WORKER_RENEW_SECONDS": "1"}


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create an empty PostgreSQL database; yield its URL; drop it afterwards."""
    name = f"pb_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class RedisServer:
    """A private redis-server on a free port; stop() and start() it at will."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.folder)]  # fmt: skip
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log)
        wait_for(self._answers, "redis-server to answer", 10, every=0.05)

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@contextmanager
def private_redis(folder: Path) -> Iterator[RedisServer]:
    folder.mkdir(parents=True, exist_ok=True)
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Process:
    """One process of the deployment."""

    name: str
    process: subprocess.Popen
    log: Path
    base: str | None = None  # web and API processes

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, as systemd and honcho stop a process; SIGKILL if it lingers."""
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, size: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""


@dataclass
class Deployment:
    """Web processes and workers on one database and one Redis, with the API served alone."""

    var: Path
    env: dict[str, str]
    api: Process | None = None
    webs: list[Process] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)
    _count: int = 0

    @property
    def api_key(self) -> str:
        return self.env["MOCKUP_API_KEY"]

    @property
    def base(self) -> str:
        """The first web process (what the upstream calls back)."""
        return self.webs[0].base

    def _spawn(self, name: str, command: list[str], **env: str) -> Process:
        self._count += 1
        log = self.var / "logs" / f"{name}-{self._count}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env={**self.env, **env}, stdout=out, stderr=out
            )
        return Process(name, process, log)

    def start_api(self, **env: str) -> Process:
        port = free_port()
        command = [sys.executable, "manage.py", "run_mockup_api", "--port", str(port)]
        api = self._spawn("api", command, **env)
        api.base = f"http://127.0.0.1:{port}"
        probe = f"{api.base}/mockup-api/v2/files/{'0' * 32}.png"  # 404 once up; no token spent
        self._wait_http(api, probe)
        self.api = api
        return api

    def start_web(self, port: int | None = None) -> Process:
        port = port or free_port()
        daphne = str(Path(sys.executable).parent / "daphne")
        command = [daphne, "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=1024",
                   "photobooth.asgi:application"]  # fmt: skip
        web = self._spawn("web", command)
        web.base = f"http://127.0.0.1:{port}"
        self._wait_http(web, f"{web.base}/health")
        self.webs.append(web)
        return web

    def start_worker(self) -> Process:
        worker = self._spawn("worker", [sys.executable, "manage.py", "worker"])
        wait_for(lambda: self._registered(worker), f"worker {worker.process.pid} to register",
                 30, every=0.1)  # fmt: skip
        self.workers.append(worker)
        return worker

    def _registered(self, worker: Process) -> bool:
        if not worker.alive:
            pytest.fail(f"the worker died:\n{worker.tail()}")
        rows = self.sql("SELECT count(*) FROM jobs_app_worker WHERE name LIKE %s",
                        f"%:{worker.process.pid}")  # fmt: skip
        return rows[0][0] > 0

    def _wait_http(self, process: Process, probe: str) -> None:
        wait_until_up(probe, process.process, process.log, process.name)

    def sql(self, query: str, *params: Any) -> list[tuple]:
        """Run a statement on the deployment's database; return its rows (if any)."""
        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as db:
            cursor = db.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def upstream_stats(self) -> dict[str, Any]:
        """The built-in API's creation counts (`createdByKey`: upstream tasks per our task id)."""
        response = httpx.get(
            f"{self.api.base}/mockup-api/v2/debug/stats",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def logs(self) -> str:
        """The tail of every process's log, for failure messages."""
        parts = [self.api, *self.webs, *self.workers]
        return "\n".join(f"--- {p.name} ({p.log.name})\n{p.tail(2500)}" for p in parts if p)

    def stop_all(self) -> None:
        for process in [*self.workers, *self.webs, self.api]:
            if process is not None:
                with contextlib.suppress(Exception):
                    process.stop()


@contextmanager
def deployment(
    tmp_path: Path, *, webs: int = 1, workers: int = 1, web_ports: list[int] | None = None,
    public_base_url: str | None = None, **env: str,
) -> Iterator[tuple[Deployment, RedisServer]]:  # fmt: skip
    """Start the database, Redis, the API, `webs` web processes and `workers` workers.

    `public_base_url` is where the upstream calls back and fetches uploads (default: the first
    web process); web processes listen on `web_ports` when given.
    """
    var = tmp_path / "var"
    (var / "logs").mkdir(parents=True)
    ports = web_ports or [free_port() for _ in range(webs)]
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with fresh_database() as database_url, private_redis(tmp_path / "redis") as redis_server:
        base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        base_env.update(
            PHOTOBOOTH_VAR_DIR=str(var),
            DJANGO_SETTINGS_MODULE="photobooth.settings",
            DATABASE_URL=database_url,
            DATABASE_POOL_MAX="10",
            REDIS_URL=redis_server.url,
            MOCKUP_API_KEY=secrets.token_hex(16),
            WEBHOOK_SECRETS=secret,
            PUBLIC_BASE_URL=public_base_url or f"http://127.0.0.1:{ports[0]}",
            MOCKUP_API_RATE_LIMIT="100000",
            **TEST_LEASE,
        )
        base_env.update(env)
        setup = Deployment(var=var, env=base_env)
        subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v0"],
                       cwd=ROOT, env=base_env, check=True)  # fmt: skip
        try:
            api = setup.start_api()
            setup.env["MOCKUP_API_URL"] = f"{api.base}/mockup-api"
            for port in ports:
                setup.start_web(port)
            for _ in range(workers):
                setup.start_worker()
            yield setup, redis_server
        finally:
            setup.stop_all()
