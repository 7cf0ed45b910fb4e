"""Error format of Django's own answers, health endpoints, OpenAPI schema and docs."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import path

pytestmark = pytest.mark.django_db


def boom(request):
    raise RuntimeError("kaboom")


urlpatterns = [path("boom", boom)]
handler500 = "photobooth.errors.handler500"  # as photobooth/urls.py sets it


def test_an_unknown_url_gets_a_json_404():
    response = Client().get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "No such endpoint or object."}
    }


def test_a_browser_asking_for_an_unknown_page_gets_an_html_404():
    response = Client().get("/no-such-page/", headers={"Accept": "text/html,*/*"})
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert "We can" in response.content.decode()
    api = Client().get("/api/no-such-thing", headers={"Accept": "text/html,*/*"})
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


def test_a_wrong_method_gets_a_json_405_with_allow(owner):
    response = owner.client.put("/api/tasks", headers={"Authorization": f"Bearer {owner.token}"})
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_a_crash_gets_a_json_500_without_internals(settings):
    settings.ROOT_URLCONF = __name__
    client = Client(raise_request_exception=False)
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "kaboom" not in response.content.decode()


def test_the_admin_keeps_its_html_404(admin_client):
    response = admin_client.get("/admin/jobs_app/task/00000000-0000-0000-0000-000000000000/x/")
    assert response.status_code in (302, 404)
    assert "application/json" not in response.headers["Content-Type"]


def test_the_health_endpoints_answer_ok():
    client = Client()
    assert client.get("/health").json()["status"] == "ok"
    db = client.get("/db-health").json()
    assert db["status"] == "ok" and db["database"] in ("sqlite", "postgresql")
    layer = client.get("/ws-health").json()
    assert layer["status"] == "ok" and layer["channelLayer"] == "InMemoryChannelLayer"


def test_ws_health_answers_503_when_the_channel_layer_is_down(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},  # nothing listens on port 1
        }
    }
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    try:
        response = Client().get("/ws-health")
    finally:
        channel_layers.backends.clear()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["error"]["code"] == "channel_layer_unavailable"


def test_the_openapi_schema_describes_every_endpoint():
    response = Client().get("/api/schema/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    for expected in (
        "/api/sessions",
        "/api/styles",
        "/api/products",
        "/api/uploads",
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/cancel",
    ):
        assert expected in paths


def test_the_api_docs_are_served_without_a_cdn():
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "cdn." not in page and "unpkg" not in page


def test_styles_and_products_are_public_and_well_formed():
    client = Client()
    styles = client.get("/api/styles").json()
    assert len(styles) >= 8
    assert all(set(style) == {"id", "name", "description"} for style in styles)
    products = client.get("/api/products").json()
    assert {p["type"] for p in products} >= {"t-shirt", "hoodie", "mug", "tote-bag", "poster"}
    for product in products:
        assert set(product) == {"id", "name", "type", "variants", "placements"}
        assert product["placements"] and product["variants"]
        for variant in product["variants"]:
            assert {"id", "name", "color", "size"} <= set(variant)
            assert variant["colorCode"].startswith("#")


def test_the_migrations_match_the_models():
    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
