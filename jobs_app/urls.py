from django.urls import path

from jobs_app import api, files, health, observability, polling, webhooks

urlpatterns = [
    path("api/styles", api.StylesView.as_view(), name="styles"),
    path("api/products", api.ProductsView.as_view(), name="products"),
    path("api/uploads", api.UploadsView.as_view(), name="uploads"),
    path("api/tasks", api.TasksView.as_view(), name="tasks"),
    path("api/tasks/<uuid:task_id>", api.TaskDetailView.as_view(), name="task-detail"),
    path("api/tasks/<uuid:task_id>/cancel", api.TaskCancelView.as_view(), name="task-cancel"),
    path("api/events", polling.events_view, name="events"),
    path("media/results/<str:name>", files.result_file_view, name="result-file"),
    path("media/uploads/<str:token>", files.upload_file_view, name="upload-file"),
    path("api/sse/stats", observability.sse_stats_view, name="sse-stats"),
    path("metrics", observability.metrics_view, name="metrics"),
    path("webhooks/mockup-api", webhooks.mockup_api_webhook_view, name="mockup-api-webhook"),
    path("health", health.health_view, name="health"),
    path("ws-health", health.ws_health_view, name="ws-health"),
    path("db-health", health.db_health_view, name="db-health"),
]
