"""The served `POST /webhooks/mockup-api`: a plain ASGI app ahead of Django, storing in batches.

One web process must take 1,000 deliveries a second. Profiled under load (py-spy; about 60
deliveries/s through Django), Django's handler spent the event loop on what this endpoint does
not need: every MIDDLEWARE entry (sessions, CSRF, auth, messages: the signature is the
authentication here) ran through sync_to_async, each request got a new thread (its
ThreadSensitiveContext), the request signals closed connections through more thread hops, and
the per-request threads queued for the pooled connections. `WebhookEndpoint` instead:

- reads the body itself, answering 413 as soon as it passes 256 KiB (Django's BodySizeLimit
  guard in front of the other paths allows uploads of 16 MiB);
- verifies on the event loop (`jobs_app.webhooks.check`; an HMAC over at most 256 KiB takes
  microseconds);
- stores through `DeliveryStore`: deliveries that arrive while earlier ones are being stored
  wait and are stored together (`jobs_app.webhooks.store_each`: one `INSERT ... ON CONFLICT DO
  NOTHING RETURNING`) on one of two threads of its own, which keep their connection while
  deliveries keep coming. Each answer still waits for its own delivery's commit; batches form
  only under load, so a lone delivery is stored at once;
- rings the doorbell through `doorbell.ring_soon`, which merges the rings of a burst (one
  Redis round trip per delivery was a tenth of the event loop).

What is left per delivery is mostly daphne and Twisted (photobooth/twisted_forms.py removes
Twisted's form parsing, which daphne never uses); docs/upstream.md has the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import queue
import threading
from collections.abc import Callable

from django.db import connection

from jobs_app import doorbell
from jobs_app.webhooks import (
    MAX_BODY_BYTES,
    REJECTED_BODY_BYTES,
    Delivery,
    Received,
    StorageUnavailable,
    check,
    store_each,
)
from photobooth.db import drop_connection_if_broken
from photobooth.errors import error_body

logger = logging.getLogger(__name__)


class DeliveryStore:
    """Store deliveries from the event loop in batches, on threads of its own.

    At most `threads` batches are being stored at once; deliveries arriving meanwhile wait and
    go together in the next batch (at most `max_batch`), so under load a delivery costs a share
    of one statement and one commit. Each thread keeps its database connection while batches
    keep coming and hands it back to the pool after `idle_seconds` without one, so the pool's
    health checks and lifetime apply again (which is why these are threads of its own, not a
    ThreadPoolExecutor: an idle thread must be the one to close its connection). A connection
    a failed statement broke is dropped at once.
    """

    threads = 2  # two batches in flight: one in the database while the next fills
    max_batch = 100
    idle_seconds = 5.0

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[list[Delivery], Callable] | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple[Delivery, asyncio.Future[Received]]] = []
        self._in_flight = 0

    async def store(self, delivery: Delivery) -> Received:
        """Store one delivery (with whatever else is waiting); return its answer once committed."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # tests run a loop each; production has one
            self._loop, self._waiting, self._in_flight = loop, [], 0
        future: asyncio.Future[Received] = loop.create_future()
        self._waiting.append((delivery, future))
        self._dispatch()
        return await future

    def close(self) -> None:
        """Stop the threads, closing their connections (tests; a process exiting needs none)."""
        workers, self._workers = self._workers, []
        for _ in workers:
            self._jobs.put(None)
        for worker in workers:
            worker.join(10)

    def _dispatch(self) -> None:
        while self._waiting and self._in_flight < self.threads:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            self._in_flight += 1
            self._start_threads()
            done = functools.partial(self._done_threadsafe, self._loop, batch)
            self._jobs.put(([delivery for delivery, _ in batch], done))

    def _done_threadsafe(
        self, loop: asyncio.AbstractEventLoop, batch: list, outcomes: list
    ) -> None:
        # A closed loop (a test ended) raises RuntimeError: nobody waits for these answers.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._done, loop, batch, outcomes)

    def _done(self, loop: asyncio.AbstractEventLoop, batch: list, outcomes: list) -> None:
        if loop is not self._loop:
            return
        self._in_flight -= 1
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its request was cancelled (client gone); it is stored anyway
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if any(isinstance(o, Received) and o.ring for o in outcomes):
            doorbell.ring_soon(doorbell.INBOX)  # committed: the workers may look
        self._dispatch()

    def _start_threads(self) -> None:
        self._workers = [worker for worker in self._workers if worker.is_alive()]
        while len(self._workers) < self.threads:
            worker = threading.Thread(target=self._work, name="webhook-store", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _work(self) -> None:
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=self.idle_seconds)
                except queue.Empty:
                    connection.close()  # idle: back to the pool
                    job = self._jobs.get()
                if job is None:
                    return
                deliveries, done = job
                try:
                    outcomes = store_each(deliveries)
                except Exception as exc:  # store_each answers each one; never leave one waiting
                    logger.exception("webhook_store_crashed")
                    outcomes = [exc] * len(deliveries)
                drop_connection_if_broken()
                done(outcomes)
        finally:
            connection.close()


# --- HTTP -----------------------------------------------------------------------------------

_HEADERS_JSON = [(b"content-type", b"application/json"), (b"x-content-type-options", b"nosniff")]


class WebhookEndpoint:
    """The ASGI app of `POST /webhooks/mockup-api`, routed ahead of Django (photobooth/asgi.py)."""

    store_class = DeliveryStore

    def __init__(self) -> None:
        self.store = self.store_class()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["method"] != "POST":
            message = "Allowed methods: POST."
            return await _answer(send, 405, error_body("method_not_allowed", message),
                                 [(b"allow", b"POST")])  # fmt: skip
        read = await _read_body(receive)
        if read is None:
            return  # the client went away
        body, too_large = read
        delivery = check(_headers(scope), body, too_large=too_large)
        try:
            received = await self.store.store(delivery)
        except StorageUnavailable as exc:
            received = exc
        except Exception:
            received = None  # a bug, logged by the store
        if delivery.rejected is not None:
            # Answered whether or not its record could be kept: the sender must not retry it.
            rejected = delivery.rejected
            return await _answer(send, rejected.status, error_body(rejected.code, str(rejected)))
        if isinstance(received, StorageUnavailable):
            # The database stayed away through the store's retries: not stored, so not 2xx;
            # the sender delivers it again (Standard Webhooks retries anything but 2xx).
            retry_after = str(received.retry_after_seconds).encode()
            return await _answer(send, received.status, error_body(received.code, str(received)),
                                 [(b"retry-after", retry_after)])  # fmt: skip
        if received is None:
            message = "Something went wrong on our side; it has been logged."
            return await _answer(send, 500, error_body("internal_error", message))
        await _answer(send, received.status)


def _headers(scope: dict) -> dict[str, str]:
    """Return the request headers by lower-cased name, repeated ones joined as Django does."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


async def _read_body(receive: Callable) -> tuple[bytes, bool] | None:
    """Return (body, too large), stopping as the body passes MAX_BODY_BYTES; None: gone."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > MAX_BODY_BYTES:
            return b"".join(chunks)[:REJECTED_BODY_BYTES], True
        if not message.get("more_body", False):
            return b"".join(chunks), False


async def _answer(send: Callable, status: int, payload: dict | None = None,
                  extra: list[tuple[bytes, bytes]] = ()) -> None:  # fmt: skip
    body = json.dumps(payload).encode() if payload is not None else b""
    headers = [*(_HEADERS_JSON if payload is not None else ()), *extra]
    if status != 204:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


endpoint = WebhookEndpoint()
