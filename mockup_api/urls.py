"""HTTP routes of the built-in mockup API, mounted at /mockup-api/ (contract section 6)."""

from django.urls import path, re_path

from mockup_api import views
from mockup_api.files import NAME_PATTERN

app_name = "mockup_api"

urlpatterns = [
    path("v2/catalog-products", views.catalog_products, name="catalog-products"),
    path("v2/generation-tasks", views.generation_tasks, name="generation-tasks"),
    path("v2/generation-tasks/<str:task_id>", views.generation_task, name="generation-task"),
    path("v2/mockup-tasks", views.mockup_tasks, name="mockup-tasks"),
    path("v2/debug/connections", views.debug_connections, name="debug-connections"),
    path("v2/debug/stats", views.debug_stats, name="debug-stats"),
    re_path(rf"^v2/files/(?P<name>{NAME_PATTERN})$", views.hosted_file, name="file"),
]
