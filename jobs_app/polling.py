"""`GET /api/events`: the polling fallback, with long-poll.

An async view on purpose: a waiting request must not hold the one thread Django runs sync
views in. It waits on the channel-layer doorbell of its scope and always reads the log.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from rest_framework.exceptions import APIException, ValidationError

from jobs_app.events import (
    SESSION_WIDE,
    EventFilter,
    EventPage,
    read_events,
    reset_event,
    serialize_event,
)
from photobooth.errors import error_response, method_not_allowed
from sessions_app.actions import find_client_app
from sessions_app.authentication import resolve_session
from sessions_app.errors import NoSession
from sessions_app.models import BoothSession


def _parse_wait(raw: str | None) -> float:
    if raw is None or raw == "":
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise ValidationError({"wait": "A number of seconds from 0 to 25."}) from None
    if wait != wait or wait < 0:  # NaN or negative
        raise ValidationError({"wait": "A number of seconds from 0 to 25."})
    return min(wait, settings.EVENT_POLL_MAX_WAIT_SECONDS)


@sync_to_async
def _open(request: HttpRequest) -> tuple[BoothSession, str | None]:
    session = resolve_session(request)
    if session is None:
        raise NoSession()
    client_app_id = request.GET.get("clientAppId") or None
    if client_app_id is not None:
        find_client_app(session, client_app_id)  # 400 malformed, 403 another session's
    return session, client_app_id


_read = sync_to_async(read_events)


async def events_view(request: HttpRequest) -> JsonResponse:
    """Return the events after `after`; with `wait`, hold the request until one arrives."""
    if request.method != "GET":
        return method_not_allowed(["GET"])
    try:
        session, client_app_id = await _open(request)
        wait = _parse_wait(request.GET.get("wait"))
        after = request.GET.get("after") or None
        event_filter = (
            EventFilter(client_app_ids=frozenset({client_app_id}))
            if client_app_id
            else SESSION_WIDE
        )
        page = await _read(session, after, event_filter)
        if wait > 0 and not page.events and not page.reset:
            page = await _wait_for_events(session, page.cursor, event_filter, wait)
    except APIException as exc:
        return error_response(exc)
    return JsonResponse(_page_body(session, page, client_app_id))


async def _wait_for_events(
    session: BoothSession, cursor: str, event_filter: EventFilter, wait: float
) -> EventPage:
    layer = get_channel_layer()
    [group] = event_filter.groups(session.pk)
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    try:
        # Read again now that the doorbell is wired: an event committed in between is not missed.
        page = await _read(session, cursor, event_filter)
        deadline = asyncio.get_running_loop().time() + wait
        while not page.events and not page.reset:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(layer.receive(channel), remaining)
            page = await _read(session, cursor, event_filter)
        return page
    finally:
        await layer.group_discard(group, channel)


def _page_body(session: BoothSession, page: EventPage, client_app_id: str | None) -> dict[str, Any]:
    if page.reset:
        events = [reset_event(session, page.cursor, client_app_id)]
    else:
        events = [serialize_event(event) for event in page.events]
    return {"events": events, "cursor": page.cursor}
