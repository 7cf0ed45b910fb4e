"""The pages people use: the photobooth, mockups, one mockup's results and the history.

Plain function views (style guide 18): `_booth_session_for_browser` finds or starts the caller's
booth session, each view builds an explicit ctx and calls render(). The pages then talk to the
API from JavaScript (static/js/); these views render only what the first paint needs.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe

from jobs_app.events import format_cursor
from jobs_app.models import Task
from jobs_app.serializers import MAX_IMAGES_PER_GENERATION
from jobs_app.states import TaskKind
from jobs_app.styles import STYLES
from pages.display import products_by_id, task_card
from sessions_app.actions import do_start_session
from sessions_app.authentication import remember_in_cookie, session_from_cookie
from sessions_app.models import BoothSession

HISTORY_PAGE_SIZE = 20


def _booth_session_for_browser(request: HttpRequest) -> BoothSession:
    """Return the browser's booth session, starting one (kept in its cookie) when it has none."""
    session = session_from_cookie(request.session)
    if session is None:
        # The started session's bearer token is never shown: browsers use the cookie.
        session = do_start_session().session
        remember_in_cookie(request, session)
    return session


def _get_task_for_browser(
    request: HttpRequest, task_id: UUID, kind: str
) -> tuple[BoothSession, Task | None]:
    """Return the caller's session and task of this kind (None: missing or not theirs)."""
    session = _booth_session_for_browser(request)
    tasks = Task.objects.select_related("client_app", "session", "source_job")
    task = tasks.prefetch_related("jobs").filter(pk=task_id, session=session, kind=kind).first()
    return session, task


def _page_ctx(session: BoothSession, page: str) -> dict[str, Any]:
    """Return what every page's template and client module need."""
    # The log's head before anything is read for the page: a stream resuming from it misses
    # nothing that happens after the page (or the state it fetches next) was read.
    head_cursor = format_cursor(session, session.event_seq)
    return {
        "page": page,
        "live": True,  # the page follows events (the header shows the connection)
        "client_config": {
            "sessionId": str(session.pk),
            "page": page,
            "headCursor": head_cursor,
            # The client treats a stream as dead after missing about three heartbeats.
            "heartbeatSeconds": settings.STREAM_HEARTBEAT_SECONDS,
            "uploadMaxBytes": settings.UPLOAD_MAX_BYTES,
            "uploadMaxPixels": settings.UPLOAD_MAX_PIXELS,
        },
    }


@require_safe
@ensure_csrf_cookie
def photobooth(request: HttpRequest) -> HttpResponse:
    """Render the photobooth: photo, style, count, and the live gallery."""
    session = _booth_session_for_browser(request)
    ctx = _page_ctx(session, "photobooth")
    ctx.update(styles=STYLES, max_images=MAX_IMAGES_PER_GENERATION, default_images=4)
    return render(request, "pages/photobooth.html", ctx)


@require_safe
@ensure_csrf_cookie
def mockups(request: HttpRequest) -> HttpResponse:
    """Render the mockup maker; products come from /api/products in the browser."""
    session = _booth_session_for_browser(request)
    ctx = _page_ctx(session, "mockups")
    return render(request, "pages/mockups.html", ctx)


@require_safe
@ensure_csrf_cookie
def mockup_result(request: HttpRequest, task_id: UUID) -> HttpResponse:
    """Render one mockup task with every variant's image (live until it finishes)."""
    session, task = _get_task_for_browser(request, task_id, TaskKind.MOCKUP)
    if task is None:
        # A page, not the API's JSON 404: people land here from links.
        ctx = _page_ctx(session, "not-found")
        ctx.update(what="mockup", live=False)
        return render(request, "pages/not_found.html", ctx, status=404)
    ctx = _page_ctx(session, "mockup-result")
    card = task_card(task, products_by_id())
    ctx.update(card=card, live=not card.finished)
    return render(request, "pages/mockup_result.html", ctx)


@require_safe
@ensure_csrf_cookie
def history(request: HttpRequest) -> HttpResponse:
    """Render this session's tasks, newest first, with their results."""
    session = _booth_session_for_browser(request)
    tasks = (
        Task.objects.filter(session=session)
        .select_related("client_app", "session", "source_job")
        .prefetch_related("jobs")
        .order_by("-created_at", "-id")
    )
    page = Paginator(tasks, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    products = products_by_id()
    ctx = _page_ctx(session, "history")
    ctx.update(page_obj=page, cards=[task_card(task, products) for task in page.object_list])
    return render(request, "pages/history.html", ctx)
