"""The workers' doorbell: web processes and actions tell workers there is something to do.

A hint, not a mailbox: rung through the channel layer (Redis across processes), at most once;
workers also poll, so a lost ring only costs a poll interval. State changes ring after commit
and import nothing of the worker, which wires itself in by listening (jobs_app.worker).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from jobs_app.server_loop import server_loop

logger = logging.getLogger(__name__)

WORKERS_GROUP = "photobooth.workers"
MESSAGE_TYPE = "worker.ring"
# channels-redis forgets group members after `group_expiry` (an hour here): listeners rejoin
# well before that.
REJOIN_SECONDS = 600
RETRY_SECONDS = 1.0
# ring_soon sends at most one ring of a kind per window: a web process storing 1,000 webhook
# deliveries a second would otherwise pay a Redis round trip for each, while a worker needs
# one wake-up to read them all (and polls every second anyway).
COALESCE_SECONDS = 0.025

QUEUE = "queue"  # a task was created or left the queue
INBOX = "inbox"  # a webhook delivery was stored
CANCEL = "cancel"  # a task with an upstream id was cancelled: its owner cancels it upstream


def _message(what: str, **fields: Any) -> dict[str, Any]:
    return {"type": MESSAGE_TYPE, "what": what, **fields}


async def aring(what: str, **fields: Any) -> None:
    """Ring the workers from async code; a failure is logged (workers poll anyway)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(WORKERS_GROUP, _message(what, **fields))
    except Exception as exc:
        logger.warning("doorbell_failed what=%s error=%r", what, exc)


class _Chimes:
    """The rings of one event loop: when each kind was last sent, which are due."""

    def __init__(self) -> None:
        self.last_sent: dict[str, float] = {}
        self.due: set[str] = set()
        self.sending: set[asyncio.Task] = set()  # strong references until the send ends


_chimes: weakref.WeakKeyDictionary[Any, _Chimes] = weakref.WeakKeyDictionary()  # by loop


def _chimes_of(loop: asyncio.AbstractEventLoop) -> _Chimes:
    chimes = _chimes.get(loop)
    if chimes is None:
        chimes = _chimes[loop] = _Chimes()
    return chimes


def ring_soon(what: str) -> None:
    """Ring the workers from the event loop (after commit) without waiting for the send.

    Rings within COALESCE_SECONDS of the last one sent are merged into one sent when the
    window ends, so the last of a burst is never lost: it is sent after every commit it
    stands for.
    """
    loop = asyncio.get_running_loop()
    chimes = _chimes_of(loop)
    if what in chimes.due:
        return  # a ring not yet sent covers this one
    chimes.due.add(what)
    wait = chimes.last_sent.get(what, float("-inf")) + COALESCE_SECONDS - loop.time()
    if wait > 0:
        loop.call_later(wait, _send_due, loop, chimes, what)
    else:
        _send_due(loop, chimes, what)


def _send_due(loop: asyncio.AbstractEventLoop, chimes: _Chimes, what: str) -> None:
    # No longer due once its send starts: a commit after this point needs a ring of its own.
    chimes.due.discard(what)
    chimes.last_sent[what] = loop.time()
    task = loop.create_task(aring(what))
    chimes.sending.add(task)
    task.add_done_callback(chimes.sending.discard)


def ring_rollback_unsafe(what: str, **fields: Any) -> None:
    """Ring the workers from sync code, now (only after the change committed).

    It does not wait for the send: the committing thread (often a worker's database thread)
    goes on with its next write.
    """
    loop = server_loop()
    if loop is None:
        async_to_sync(aring)(what, **fields)
        return
    try:
        loop.call_soon_threadsafe(_ring_on_loop, loop, what, fields)
    except RuntimeError:  # the loop closed since we looked: the server is shutting down
        logger.warning("doorbell_failed what=%s error=server_loop_closed", what)


def _ring_on_loop(loop: asyncio.AbstractEventLoop, what: str, fields: dict[str, Any]) -> None:
    if not fields:
        ring_soon(what)  # merged with the other rings of a burst
        return
    chimes = _chimes_of(loop)
    task = loop.create_task(aring(what, **fields))  # aring logs its own failures
    chimes.sending.add(task)
    task.add_done_callback(chimes.sending.discard)


def ring_on_commit(what: str, **fields: Any) -> None:
    """Ring the workers once the current transaction commits."""
    transaction.on_commit(lambda: ring_rollback_unsafe(what, **fields))


async def listen(on_ring, stopping: asyncio.Event) -> None:
    """Join the workers' group and hand every ring to `on_ring(message)` until stopped.

    Survives channel-layer outages (Redis restarting): it waits and joins again.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    while not stopping.is_set():
        try:
            channel = await layer.new_channel()
            await layer.group_add(WORKERS_GROUP, channel)
            loop = asyncio.get_running_loop()
            rejoin_at = loop.time() + REJOIN_SECONDS
            while not stopping.is_set():
                timeout = max(0.1, rejoin_at - loop.time())
                try:
                    message = await asyncio.wait_for(layer.receive(channel), timeout)
                except TimeoutError:
                    await layer.group_add(WORKERS_GROUP, channel)
                    rejoin_at = loop.time() + REJOIN_SECONDS
                    continue
                try:
                    on_ring(message)
                except Exception:
                    logger.exception("doorbell_handler_failed message=%r", message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("doorbell_listen_failed error=%r", exc)
            await asyncio.sleep(RETRY_SECONDS)
