"""Who may open which stream: the caller's session and the scope it asks for.

Plain sync functions (consumers call them through database_sync_to_async); refusals are the
API's coded errors, which the consumers turn into an HTTP status (SSE) or a close code (WS).
"""

from __future__ import annotations

import uuid
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.http import parse_cookie
from rest_framework import status

from jobs_app.errors import TaskNotFound
from jobs_app.events import SESSION_WIDE, EventFilter
from jobs_app.models import Task
from jobs_app.streams import StreamScope
from photobooth.errors import PhotoboothError
from sessions_app.actions import check_client_app_id, do_claim_client_app, session_for_token
from sessions_app.authentication import bearer_token_of, session_from_cookie
from sessions_app.errors import NoSession
from sessions_app.models import BoothSession

# WebSocket close codes of the contract, by the HTTP status of the refusal.
WS_CLOSE_CODES = {401: 4001, 403: 4003, 404: 4003, 400: 4400, 429: 4029}


class TaskForbidden(PhotoboothError):
    """The task belongs to another session."""

    status_code = status.HTTP_403_FORBIDDEN
    default_code = "forbidden"
    default_detail = "This task belongs to another session."


class BadChannels(PhotoboothError):
    """The multiplexed stream's `channels` parameter cannot be read."""

    default_code = "invalid_channels"
    default_detail = "channels is a comma-separated list of client:<id>, task:<id> and session."


class TooManyStreams(PhotoboothError):
    """The session already holds the most streams it may."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "too_many_streams"
    default_detail = "This session has too many open streams; close one first."


def headers_of(scope: dict[str, Any]) -> dict[str, str]:
    """Return an ASGI scope's headers as a lower-case dict."""
    return {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope.get("headers", [])}


def resolve_caller(scope: dict[str, Any]) -> BoothSession:
    """Return the caller's booth session: bearer token first, then the session cookie."""
    headers = headers_of(scope)
    token = bearer_token_of(headers)
    if token is not None:
        return session_for_token(token)
    django_session = django_session_of(headers)
    session = session_from_cookie(django_session) if django_session is not None else None
    if session is None:
        raise NoSession()
    return session


def django_session_of(headers: dict[str, str]) -> SessionBase | None:
    """Return the Django session the request's session cookie names, None without one.

    Read once, while the stream opens. Channels' SessionMiddlewareStack would do the same
    for every connection but keep two more copies of the scope, a lazy session and its
    wrapper alive for the connection's whole life: a thousand idle streams per process.
    """
    cookies = parse_cookie(headers.get("cookie", ""))
    session_key = cookies.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return None
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key)


def client_scope(session: BoothSession, client_app_id: str | None) -> StreamScope:
    """Follow one client app (claiming an unused id for the session)."""
    client_app_id = check_client_app_id(client_app_id)
    do_claim_client_app(session, client_app_id)
    return StreamScope(
        kind="client",
        id=client_app_id,
        event_filter=EventFilter(client_app_ids=frozenset({client_app_id})),
        client_app_id=client_app_id,
    )


def session_scope(session: BoothSession) -> StreamScope:
    """Follow the whole session."""
    return StreamScope(kind="session", id=str(session.pk), event_filter=SESSION_WIDE)


def check_task(session: BoothSession, task_id: str) -> Task:
    """Return the session's task: 404 when there is none, 403 when it is another session's."""
    try:
        task_uuid = uuid.UUID(str(task_id))
    except ValueError:
        raise TaskNotFound() from None
    task = Task.objects.select_related("client_app").filter(pk=task_uuid).first()
    if task is None:
        raise TaskNotFound()
    if task.session_id != session.pk:
        raise TaskForbidden()
    return task


def task_scope(session: BoothSession, task_id: str) -> StreamScope:
    """Follow one task until its terminal event."""
    task = check_task(session, task_id)
    return StreamScope(
        kind="task",
        id=str(task.pk),
        event_filter=EventFilter(task_ids=frozenset({str(task.pk)})),
        client_app_id=task.client_app.client_app_id,
        task_id=str(task.pk),
    )


def multiplex_scope(session: BoothSession, channels: str) -> StreamScope:
    """Follow several scopes at once (`client:X,task:Y,session`); each event is sent once."""
    clients: set[str] = set()
    tasks: set[str] = set()
    whole_session = False
    names = [name.strip() for name in channels.split(",") if name.strip()]
    if not names or len(names) > 50:
        raise BadChannels()
    for name in names:
        kind, _, value = name.partition(":")
        if kind == "session" and not value:
            whole_session = True
        elif kind == "client" and value:
            clients.add(client_scope(session, value).client_app_id)
        elif kind == "task" and value:
            tasks.add(task_scope(session, value).task_id)
        else:
            raise BadChannels(details={"channel": name})
    event_filter = EventFilter(
        whole_session=whole_session, client_app_ids=frozenset(clients), task_ids=frozenset(tasks)
    )
    return StreamScope(
        kind="multiplex",
        id=",".join(names),
        event_filter=event_filter,
        client_app_id=next(iter(clients)) if len(clients) == 1 else None,
    )
