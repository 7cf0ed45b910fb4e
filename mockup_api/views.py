"""HTTP endpoints of the built-in mockup API (contract section 6): plain async Django views.

Every REST call is authenticated by the bearer API key and spends one token of the key's
bucket; the result files are public capability URLs, like a CDN's.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from mockup_api import files, generation, idempotency, mockups
from mockup_api.catalog import CATALOG_PRODUCTS
from mockup_api.connections import registry
from mockup_api.errors import (
    InvalidRequest,
    MockupApiError,
    NotFound,
    RateLimited,
    Unauthorized,
    method_not_allowed,
    render_error,
)
from mockup_api.ratelimit import limiter
from mockup_api.store import GenerationTask, store
from mockup_api.validation import generation_request, json_body, mockup_requests

View = Callable[..., Awaitable[HttpResponse]]
MAX_IDS_PER_QUERY = 100


def _api_key(request: HttpRequest) -> str | None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        return None
    if not hmac.compare_digest(key.strip().encode(), settings.MOCKUP_API_KEY.encode()):
        return None
    return key.strip()


def _credential(request: HttpRequest) -> str:
    """Return the caller's API key, which endpoint() has already checked."""
    key = _api_key(request)
    if key is None:
        raise Unauthorized()
    return key


def endpoint(*methods: str, metered: bool = True) -> Callable[[View], View]:
    """Wrap a view with the method check, bearer auth, the rate limit and coded errors."""

    def decorate(view: View) -> View:
        @csrf_exempt  # bearer-authenticated machine API: no cookies, so no CSRF
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            if request.method not in methods:
                return method_not_allowed(list(methods))
            key = _api_key(request)
            if key is None:
                return render_error(Unauthorized())
            verdict = limiter.take(key) if metered else None
            try:
                if verdict is not None and not verdict.allowed:
                    raise RateLimited(verdict.retry_after)
                response = await view(request, *args, **kwargs)
            except MockupApiError as exc:
                response = render_error(exc)
            if verdict is not None:
                for name, value in verdict.headers().items():
                    response[name] = value
            return response

        return wrapper

    return decorate


@endpoint("GET")
async def catalog_products(request: HttpRequest) -> JsonResponse:
    """Return the product catalog."""
    return JsonResponse({"data": CATALOG_PRODUCTS})


@endpoint("POST")
async def generation_tasks(request: HttpRequest) -> HttpResponse:
    """Create a generation or enhancement task, once per Idempotency-Key."""
    return idempotency.create_once(request, _credential(request), _create_generation)


def _create_generation(request: HttpRequest) -> idempotency.Created:
    params = generation_request(json_body(request))
    task = generation.create_task(params, files_base=files.url_base(request))
    return idempotency.Created(body={"data": task.to_dict()}, tasks=[task])


def _generation_task(task_id: str) -> GenerationTask:
    task = store.generation.get(task_id)
    if task is None:
        raise NotFound(f"No generation task {task_id}.")
    return task


@endpoint("GET", "DELETE")
async def generation_task(request: HttpRequest, task_id: str) -> JsonResponse:
    """Return a generation task; DELETE cancels it (a finished task stays as it was)."""
    task = _generation_task(task_id)
    if request.method == "DELETE":
        generation.cancel_task(task)
    return JsonResponse({"data": task.to_dict()})


@endpoint("GET", "POST")
async def mockup_tasks(request: HttpRequest) -> HttpResponse:
    """Create mockup tasks once per Idempotency-Key (POST), or return those in ?id=a,b (GET)."""
    if request.method == "POST":
        return idempotency.create_once(request, _credential(request), _create_mockups)
    ids = [i for value in request.GET.getlist("id") for i in value.split(",") if i]
    if not ids or len(ids) > MAX_IDS_PER_QUERY:
        raise InvalidRequest(
            "Name the tasks: ?id=mt_1,mt_2.",
            details={"fields": {"id": f"1 to {MAX_IDS_PER_QUERY} comma-separated ids."}},
        )
    # Like a list filter: unknown or expired ids are left out, not an error.
    found = [store.mockup[i].to_dict() for i in dict.fromkeys(ids) if i in store.mockup]
    return JsonResponse({"data": found})


def _create_mockups(request: HttpRequest) -> idempotency.Created:
    params = mockup_requests(json_body(request))
    tasks = mockups.create_tasks(params, files_base=files.url_base(request))
    body = {"data": [{"id": t.id, "status": t.status} for t in tasks]}
    return idempotency.Created(body=body, tasks=tasks)


@endpoint("GET", metered=False)
async def debug_connections(request: HttpRequest) -> JsonResponse:
    """Return the open event sockets per app id (for tests in other processes)."""
    # Not metered: observing the stand-in must not change the rate-limit state under test.
    return JsonResponse(registry.snapshot())


@endpoint("GET", metered=False)
async def debug_stats(request: HttpRequest) -> JsonResponse:
    """Return how many tasks were created, replayed, and created per Idempotency-Key."""
    # Not metered, like debug_connections. createdByKey lists only the caller's own keys.
    scope = idempotency.credential_scope(_credential(request))
    return JsonResponse(store.stats.to_dict(scope))


async def hosted_file(request: HttpRequest, name: str) -> HttpResponse:
    """Serve a result file while it lives; no auth, like a CDN link."""
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(["GET", "HEAD"])
    content = await asyncio.to_thread(files.read, name)
    if content is None:
        return render_error(NotFound("No such file, or it expired."))
    response = HttpResponse(content, content_type="image/png")
    response["Cache-Control"] = f"public, max-age={files.seconds_left(name)}, immutable"
    return response
