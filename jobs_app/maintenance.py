"""Housekeeping (the leader runs it hourly): event retention and old webhook deliveries."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from jobs_app.models import WebhookDelivery
from jobs_app.retention import prune_events

logger = logging.getLogger(__name__)

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
