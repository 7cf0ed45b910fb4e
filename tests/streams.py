"""Helpers for stream tests: WebSocket and SSE clients over Channels' test communicators."""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from jobs_app.actions import TaskRequest, check_create_task
from jobs_app.events import publish_event
from jobs_app.models import Task
from jobs_app.states import TaskKind
from jobs_app.uploads import do_store_upload
from photobooth.asgi import application
from sessions_app.models import BoothSession
from tests.conftest import image_bytes


def bearer(booth) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {booth.token}".encode())]


def ws(path: str, booth=None, headers: list | None = None) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=(bearer(booth) if booth else []) +
                                 (headers or []))  # fmt: skip


@database_sync_to_async
def create_task(booth, client_app_id: str = "booth-1", kind: str = "enhancement") -> Task:
    session = BoothSession.objects.get(pk=booth.session_id)
    upload = do_store_upload(session, SimpleUploadedFile("p.jpg", image_bytes()))
    request = TaskRequest(
        client_app_id=client_app_id,
        kind=TaskKind(kind),
        upload_id=upload.pk,
        style="comic" if kind == "generation" else None,
        number_images=2 if kind == "generation" else 1,
    )
    return check_create_task(session, request).task


@database_sync_to_async
def publish(task: Task, type: str = "progress", count: int = 1, **fields: Any) -> list[str]:
    """Publish `count` events of a task, each in its own transaction; return their cursors."""
    from jobs_app.events import format_cursor

    cursors = []
    for n in range(count):
        with transaction.atomic():
            event = publish_event(task, type, jobIndex=0, progress=n / max(count, 1), **fields)
        cursors.append(format_cursor(task.session, event.seq))
    return cursors


class SSEClient:
    """Read a streaming HTTP response of an ASGI app as Server-Sent Events."""

    def __init__(self, path: str, booth=None, headers: list | None = None):
        raw_path, _, query = path.partition("?")
        self.scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "path": raw_path,
            "raw_path": raw_path.encode(),
            "query_string": query.encode(),
            "headers": (bearer(booth) if booth else []) + (headers or []),
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.communicator = ApplicationCommunicator(application, self.scope)
        self.buffer = b""
        self.ended = False

    async def open(self, timeout: float = 3) -> tuple[int, dict[str, str], bytes]:
        await self.communicator.send_input({"type": "http.request", "body": b""})
        start = await self.communicator.receive_output(timeout)
        assert start["type"] == "http.response.start", start
        headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
        body = b""
        if start["status"] != 200:
            while True:
                message = await self.communicator.receive_output(timeout)
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        return start["status"], headers, body

    async def _read_more(self, timeout: float) -> None:
        message = await self.communicator.receive_output(timeout)
        self.buffer += message.get("body", b"")
        if not message.get("more_body", False):
            self.ended = True

    async def frame(self, timeout: float = 3) -> dict[str, str]:
        """Return the next SSE frame as {field: value} (comments under ':')."""
        while b"\n\n" not in self.buffer:
            if self.ended:
                raise EOFError("the stream ended")
            await self._read_more(timeout)
        raw, self.buffer = self.buffer.split(b"\n\n", 1)
        frame: dict[str, str] = {}
        for line in raw.decode().split("\n"):
            name, _, value = line.partition(":")
            frame[name or ":"] = value.lstrip(" ") if name else value.strip()
        return frame

    async def event(self, timeout: float = 3) -> dict[str, Any]:
        """Return the next event (skipping retry and heartbeat frames), with its SSE fields."""
        while True:
            frame = await self.frame(timeout)
            if "data" in frame:
                payload = json.loads(frame["data"])
                payload["_sse"] = {k: v for k, v in frame.items() if k != "data"}
                return payload

    async def nothing_more(self, timeout: float = 0.3) -> bool:
        """Return whether no further frame arrives within `timeout` (the stream stays open)."""
        return b"\n\n" not in self.buffer and await self.communicator.receive_nothing(timeout)

    async def until_end(self, timeout: float = 3) -> None:
        while not self.ended:
            await self._read_more(timeout)

    async def close(self) -> None:
        await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(timeout=3)


@database_sync_to_async
def cancel(task: Task) -> str:
    """Cancel a task through its action; return the cursor of its `cancelled` event."""
    from jobs_app.actions import do_cancel_task
    from jobs_app.events import format_cursor

    do_cancel_task(task)
    task.refresh_from_db()
    return format_cursor(task.session, task.last_event_seq)
