"""The URLconf of the standalone server (`manage.py run_mockup_api`): the API and nothing else."""

from django.urls import include, path

urlpatterns = [path("mockup-api/", include("mockup_api.urls"))]

handler404 = "mockup_api.errors.handler404"
handler500 = "mockup_api.errors.handler500"
