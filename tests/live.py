"""Start real daphne processes for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


# The running server processes by base URL (tests that kill one look it up here).
base_process: dict[str, subprocess.Popen] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """Return the environment of a server with the embedded defaults in `var_dir`."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PHOTOBOOTH_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="photobooth.settings")
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    command = [sys.executable, "manage.py", "migrate", "--no-input", "-v0"]
    subprocess.run(command, cwd=ROOT, env=env, check=True)


@contextmanager
def daphne(env: dict[str, str], port: int | None = None, *, serve: bool = False) -> Iterator[str]:
    """Serve the project with daphne; yield its base URL.

    `serve=True` runs `manage.py serve` (as `make run` does: the task queue starts at once);
    otherwise plain `daphne photobooth.asgi:application`. PUBLIC_BASE_URL follows the port,
    so the built-in mockup API can fetch our uploads and call our webhooks.
    """
    port = port or free_port()
    env = {"PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **env}
    if serve:
        command = [sys.executable, "manage.py", "serve", "--port", str(port)]
    else:
        daphne_bin = Path(sys.executable).parent / "daphne"
        command = [daphne_bin, "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=1024",
                   "photobooth.asgi:application"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    log = process.stderr.read().decode()[-3000:]
                    pytest.fail(f"daphne did not start:\n{log}")
                time.sleep(0.1)
        base_process[base] = process
        yield base
    finally:
        base_process.pop(base, None)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


class SSEReader:
    """Read Server-Sent Events from a real HTTP response (httpx streaming)."""

    def __init__(self, response: httpx.Response):
        self.lines = response.iter_lines()

    def event(self) -> dict:
        """Return the next event with data (skipping retry and heartbeat frames)."""
        import json

        fields: dict[str, str] = {}
        for line in self.lines:
            if line == "":
                if "data" in fields:
                    payload = json.loads(fields["data"])
                    payload["_sse"] = {k: v for k, v in fields.items() if k != "data"}
                    return payload
                fields = {}
                continue
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")
        raise EOFError("the stream ended")
