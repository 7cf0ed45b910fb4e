"""Requests run their sync code on reused threads (photobooth/request_threads.py)."""

from __future__ import annotations

import asyncio
import threading

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from channels.testing import HttpCommunicator

from photobooth.asgi import application
from photobooth.request_threads import RequestThreads


class ThreadReporter:
    """A Django-like ASGI app: its own thread-sensitive context, sync work, the thread's name."""

    def __init__(self, hold: threading.Event | None = None):
        self.hold = hold

    def _work(self) -> str:
        if self.hold is not None:
            self.hold.wait(5)
        return f"{threading.current_thread().name}:{threading.get_ident()}"

    async def __call__(self, scope, receive, send):
        async with ThreadSensitiveContext():  # what Django's ASGIHandler does
            name = await sync_to_async(self._work)()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": name.encode()})


async def call(app) -> str:
    response = await HttpCommunicator(app, "GET", "/").get_response()
    return response["body"].decode()


async def idle_executors(app: RequestThreads, count: int) -> int:
    """Wait until `count` executors are back on the free list (they come back from their
    thread, a moment after the request ends); return how many are."""
    for _ in range(200):
        if len(app.idle) >= count:
            break
        await asyncio.sleep(0.01)
    return len(app.idle)


async def test_consecutive_requests_reuse_one_thread():
    app = RequestThreads(ThreadReporter())
    names = []
    for _ in range(10):
        names.append(await call(app))
        assert await idle_executors(app, 1) == 1
    assert len(set(names)) == 1 and names[0].startswith("request")


async def test_concurrent_requests_get_threads_of_their_own_and_keep_a_bounded_few():
    hold = threading.Event()
    app = RequestThreads(ThreadReporter(hold), keep_idle=2)
    pending = [asyncio.create_task(call(app)) for _ in range(5)]
    await asyncio.sleep(0.2)
    hold.set()
    names = await asyncio.gather(*pending)
    assert len(set(names)) == 5
    assert await idle_executors(app, 2) == 2


async def test_a_thread_still_busy_for_a_cancelled_request_is_not_handed_to_the_next():
    hold = threading.Event()
    app = RequestThreads(ThreadReporter(hold))
    first = asyncio.create_task(call(app))
    await asyncio.sleep(0.2)
    first.cancel()  # the client went away; its view goes on in its thread
    assert await idle_executors(app, 1) == 0  # its thread is still busy: not handed out
    second = asyncio.create_task(call(app))
    await asyncio.sleep(0.2)
    assert not second.done()  # waits for `hold` in a thread of its own, not behind the first
    hold.set()
    assert (await second).startswith("request")
    assert await idle_executors(app, 2) == 2  # the first thread came back once its view ended


async def test_the_project_serves_django_requests_through_reused_threads(db):
    from photobooth import asgi

    kept = max(len(asgi.django_app.idle), 1)  # earlier tests may have left some
    for _ in range(3):
        communicator = HttpCommunicator(
            application, "GET", "/health", headers=[(b"host", b"testserver")]
        )
        response = await communicator.get_response()
        assert response["status"] == 200
        # Its thread is kept for the next request: the free list does not grow per request.
        assert await idle_executors(asgi.django_app, kept) == kept
