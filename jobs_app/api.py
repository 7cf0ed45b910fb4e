"""HTTP API of uploads, tasks, styles and products (contract section 2). Views stay thin:
serializers validate, actions act."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs_app.actions import check_cancel_task, check_create_task, get_task_for_session
from jobs_app.catalog import list_products
from jobs_app.errors import MissingUpload
from jobs_app.models import Task
from jobs_app.serializers import TaskCreateSerializer, task_to_dict, upload_to_dict
from jobs_app.styles import STYLES
from jobs_app.uploads import do_store_upload
from sessions_app.actions import find_client_app
from sessions_app.authentication import booth_session_of

TASK_OBJECT = OpenApiTypes.OBJECT


class StylesView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(summary="Photobooth style presets", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(list(STYLES))


class ProductsView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(summary="Mockup catalog (from the upstream, cached)",
                   responses={200: OpenApiTypes.OBJECT})  # fmt: skip
    def get(self, request: Request) -> Response:
        return Response(list_products())


class UploadsView(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        summary="Upload a photo or design (JPEG, PNG or WebP; 15 MiB, 40 megapixels)",
        request={
            "multipart/form-data": inline_serializer(
                "UploadBody", {"image": serializers.ImageField()}
            )
        },
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        session = booth_session_of(request)
        image = request.FILES.get("image")
        if image is None:
            raise MissingUpload()
        upload = do_store_upload(session, image)
        return Response(upload_to_dict(upload), status=status.HTTP_201_CREATED)


class TaskPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100

    def get_paginated_response(self, data: list) -> Response:
        return Response({"results": data, "next": self.get_next_link()})


class TasksView(APIView):
    @extend_schema(
        summary="The session's tasks, newest first",
        parameters=[OpenApiParameter("clientAppId", str), OpenApiParameter("limit", int)],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        session = booth_session_of(request)
        tasks = Task.objects.filter(session=session)
        if client_app_id := request.query_params.get("clientAppId"):
            client_app = find_client_app(session, client_app_id)
            tasks = tasks.filter(client_app=client_app) if client_app else tasks.none()
        tasks = tasks.select_related("client_app", "session").prefetch_related("jobs")
        paginator = TaskPagination()
        page = paginator.paginate_queryset(tasks, request, view=self)
        return paginator.get_paginated_response([task_to_dict(task) for task in page])

    @extend_schema(
        summary="Create a generation, enhancement or mockup task",
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
        request=TaskCreateSerializer,
        responses={202: TASK_OBJECT, 200: TASK_OBJECT},
    )
    def post(self, request: Request) -> Response:
        session = booth_session_of(request)
        key = request.headers.get("Idempotency-Key") or None
        if key is not None and (len(key) > 255 or not key.isprintable()):
            raise ValidationError({"Idempotency-Key": "At most 255 printable characters."})
        serializer = TaskCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        outcome = check_create_task(
            session, serializer.to_task_request(), idempotency_key=key, body=request.data
        )
        task = Task.objects.prefetch_related("jobs").select_related("client_app", "session")
        body = task_to_dict(task.get(pk=outcome.task.pk))
        return Response(body, status=status.HTTP_202_ACCEPTED if outcome.created else 200)


class TaskDetailView(APIView):
    @extend_schema(
        summary="One task (the polling fallback)",
        operation_id="tasks_get",
        responses={200: TASK_OBJECT},
    )
    def get(self, request: Request, task_id: str) -> Response:
        task = get_task_for_session(booth_session_of(request), task_id)
        return Response(task_to_dict(task))


class TaskCancelView(APIView):
    @extend_schema(
        summary="Cancel a task (idempotent)", request=None, responses={202: OpenApiTypes.OBJECT}
    )
    def post(self, request: Request, task_id: str) -> Response:
        outcome = check_cancel_task(booth_session_of(request), task_id)
        body = {
            "taskId": str(outcome.task.pk),
            "status": outcome.task.status,
            "didCancel": outcome.did_cancel,
            "completedJobs": outcome.completed_jobs,
            "totalJobs": outcome.total_jobs,
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)
