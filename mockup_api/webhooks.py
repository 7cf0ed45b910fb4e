"""Outgoing webhooks, signed per Standard Webhooks and retried with backoff (contract section 5).

Deliveries run as background tasks, in order per task; a retry re-signs the same id and body
with a fresh timestamp. The fault knobs live here too: duplicate deliveries, and job-progress
webhooks held back until after their task's finished webhook.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx
from django.conf import settings
from standardwebhooks import Webhook

from mockup_api.http import shared_client
from mockup_api.runner import runner
from mockup_api.store import iso, now

logger = logging.getLogger(__name__)

EventType = Literal["generation_task_finished", "mockup_task_finished", "generation_job_progress"]

# Pauses between attempts: 6 attempts in all. Tests shorten it.
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One webhook message: the id and body stay the same across retries and duplicates."""

    msg_id: str
    type: EventType
    body: str


def build(event_type: EventType, data: dict[str, Any]) -> Delivery:
    """Return a new delivery of `data` as an `event_type` webhook."""
    body = json.dumps({"type": event_type, "timestamp": iso(now()), "data": data})
    return Delivery(msg_id=f"msg_{secrets.token_hex(12)}", type=event_type, body=body)


def signed_headers(delivery: Delivery, moment: datetime) -> dict[str, str]:
    """Return the Standard Webhooks headers of `delivery`, signed at `moment`."""
    signature = Webhook(settings.WEBHOOK_SECRETS[0]).sign(delivery.msg_id, moment, delivery.body)
    return {
        "webhook-id": delivery.msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


async def deliver(delivery: Delivery) -> bool:
    """POST `delivery` until a 2xx or the attempts run out; return whether it landed."""
    url = settings.MOCKUP_API_WEBHOOK_URL
    if not url:
        return False
    client = shared_client()  # one pool for every delivery (mockup_api.http)
    for attempt, delay in enumerate((*RETRY_DELAYS, None), start=1):
        try:
            response = await client.post(
                url,
                content=delivery.body,
                headers=signed_headers(delivery, now()),
                timeout=TIMEOUT_SECONDS,
            )
            if response.is_success:
                logger.info(
                    "mockup_api webhook delivered id=%s type=%s attempt=%s",
                    delivery.msg_id, delivery.type, attempt,
                )  # fmt: skip
                return True
            outcome = f"status={response.status_code}"
        except httpx.HTTPError as exc:
            outcome = f"error={exc.__class__.__name__}"
        if delay is None:
            break
        logger.info(
            "mockup_api webhook retry id=%s attempt=%s %s next_in=%s",
            delivery.msg_id, attempt, outcome, delay,
        )  # fmt: skip
        await asyncio.sleep(delay)
    logger.warning("mockup_api webhook gave up id=%s type=%s", delivery.msg_id, delivery.type)
    return False


class Webhooks:
    """Send the stand-in's webhooks in the background, applying the ordering fault knob.

    The webhooks of one task go out one after another (a retrying one holds the next back), so
    without the knob a receiver sees a task's job webhooks before its finished webhook.
    """

    chance = staticmethod(random.random)

    def __init__(self) -> None:
        self._held: dict[str, list[Delivery]] = {}  # task id -> job webhooks held back
        self._tails: dict[str, asyncio.Task] = {}  # task id -> its last queued delivery

    def job_progress(self, task_id: str, data: dict[str, Any]) -> None:
        """Send a generation_job_progress webhook (or hold it back, per the knob)."""
        delivery = build("generation_job_progress", data)
        if settings.MOCKUP_API_REORDER_WEBHOOKS:
            self._held.setdefault(task_id, []).append(delivery)
        else:
            self._enqueue(task_id, [delivery])

    def task_finished(self, event_type: EventType, task_id: str, data: dict[str, Any]) -> None:
        """Send a *_task_finished webhook, then any job webhooks held back for the task."""
        self._enqueue(task_id, [build(event_type, data), *self._held.pop(task_id, [])])

    def _enqueue(self, task_id: str, deliveries: list[Delivery]) -> None:
        previous = self._tails.get(task_id)
        tail = runner.spawn(
            self._send_after(previous, deliveries), name=f"webhook-{deliveries[0].msg_id}"
        )
        self._tails[task_id] = tail
        tail.add_done_callback(lambda done: self._forget_tail(task_id, done))

    async def _send_after(self, previous: asyncio.Task | None, deliveries: list[Delivery]) -> None:
        if previous is not None and previous.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([previous])  # its outcome is its own business
        for delivery in deliveries:
            await deliver(delivery)
            if self.chance() < settings.MOCKUP_API_DUPLICATE_WEBHOOK_RATE:
                await deliver(delivery)  # same id: the receiver must deduplicate

    def _forget_tail(self, task_id: str, done: asyncio.Task) -> None:
        if self._tails.get(task_id) is done:
            del self._tails[task_id]

    def reset(self) -> None:
        """Forget held and queued deliveries (tests)."""
        self._held.clear()
        self._tails.clear()


webhooks = Webhooks()
