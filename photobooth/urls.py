"""URL routes of the HTTP side; WebSocket routes are in photobooth/routing.py."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("sessions_app.urls")),
    path("", include("jobs_app.urls")),
    path("", include("pages.urls")),
]

if settings.MOCKUP_API_URL is None:
    # The built-in stand-in for the external mockup API, on this same server. Only served by a
    # single process: the ASGI entry point refuses to start it with REDIS_URL set.
    urlpatterns.append(path("mockup-api/", include("mockup_api.urls")))

handler403 = "photobooth.errors.handler403"
handler404 = "photobooth.errors.handler404"
handler500 = "photobooth.errors.handler500"
