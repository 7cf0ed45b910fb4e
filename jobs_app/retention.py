"""Event-log retention: keep at least EVENT_RETENTION_HOURS and EVENT_RETENTION_MAX per session.

Only a prefix of a session's log is ever pruned, and `pruned_seq` records where it ends, so a
cursor is either fully replayable or answered with `reset`, never a silent partial replay.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from jobs_app.events import lock_session_log
from jobs_app.models import Event
from photobooth.db import durable_transaction
from sessions_app.models import BoothSession

logger = logging.getLogger(__name__)


def prune_events(now: datetime | None = None) -> int:
    """Delete events past retention in every session; return how many were deleted."""
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.EVENT_RETENTION_HOURS)
    stale_sessions = (
        Event.objects.filter(created_at__lt=cutoff).values_list("session_id", flat=True).distinct()
    )
    return sum(do_prune_session_events(session_id, cutoff) for session_id in stale_sessions)


@durable_transaction
def do_prune_session_events(session_id, cutoff: datetime) -> int:
    """Delete the session's events older than `cutoff` beyond its newest EVENT_RETENTION_MAX."""
    session: BoothSession = lock_session_log(session_id)
    old = Event.objects.filter(session=session, created_at__lt=cutoff).aggregate(Max("seq"))
    if old["seq__max"] is None:
        return 0
    through = min(old["seq__max"], session.event_seq - settings.EVENT_RETENTION_MAX)
    if through <= session.pruned_seq:
        return 0
    deleted, _ = Event.objects.filter(session=session, seq__lte=through).delete()
    BoothSession.objects.filter(pk=session.pk).update(pruned_seq=through)
    logger.info("events_pruned session=%s through=%s deleted=%s", session.pk, through, deleted)
    return deleted
