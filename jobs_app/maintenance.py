"""Hourly housekeeping of a server process: event retention and old webhook deliveries."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.utils import timezone

from jobs_app.models import WebhookDelivery
from jobs_app.retention import prune_events

logger = logging.getLogger(__name__)

EVERY_SECONDS = 3600
# Deduplication must last at least 3 days (contract section 5); a week leaves room to inspect.
WEBHOOK_DELIVERY_DAYS = 7


def prune_webhook_deliveries() -> int:
    """Delete webhook deliveries older than WEBHOOK_DELIVERY_DAYS; return how many."""
    horizon = timezone.now() - timedelta(days=WEBHOOK_DELIVERY_DAYS)
    deleted, _ = WebhookDelivery.objects.filter(received_at__lt=horizon).delete()
    return deleted


def housekeep() -> tuple[int, int]:
    """Run one round of housekeeping; return (events, deliveries) deleted."""
    return prune_events(), prune_webhook_deliveries()


async def run_maintenance() -> None:
    """Housekeep every hour until cancelled (the first round right away)."""
    while True:
        try:
            await sync_to_async(close_old_connections)()  # outside any request cycle
            events, deliveries = await sync_to_async(housekeep)()
            if events or deliveries:
                logger.info("housekeeping events=%s deliveries=%s", events, deliveries)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("housekeeping_failed")
        await asyncio.sleep(EVERY_SECONDS)
