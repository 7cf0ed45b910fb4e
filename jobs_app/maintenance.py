"""Housekeeping (the leader runs it hourly): event retention and old webhook deliveries."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from jobs_app.models import WebhookDelivery
from jobs_app.retention import prune_events
from photobooth.db import durable_transaction

logger = logging.getLogger(__name__)

# Deduplication must last at least 3 days (contract section 5); a week leaves room to inspect.
WEBHOOK_DELIVERY_DAYS = 7
# Rows deleted per transaction: an hour of deliveries at 1,000/s in one DELETE would hold the
# SQLite writer lock for seconds, and every other writer of the process would wait for it.
PRUNE_BATCH = 1000


def prune_webhook_deliveries() -> int:
    """Delete webhook deliveries older than WEBHOOK_DELIVERY_DAYS; return how many."""
    horizon = timezone.now() - timedelta(days=WEBHOOK_DELIVERY_DAYS)
    old = WebhookDelivery.objects.filter(received_at__lt=horizon).order_by("pk")
    deleted = 0
    while batch := list(old.values_list("pk", flat=True)[:PRUNE_BATCH]):
        deleted += _delete_deliveries(batch)
    return deleted


@durable_transaction
def _delete_deliveries(ids: list[int]) -> int:
    deleted, _ = WebhookDelivery.objects.filter(pk__in=ids).delete()
    return deleted


def housekeep() -> tuple[int, int]:
    """Run one round of housekeeping; return (events, deliveries) deleted."""
    return prune_events(), prune_webhook_deliveries()
