"""The server side of the pages (pages/views.py), through Django's test client.

These need no browser: they run wherever the rest of the suite runs.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from sessions_app.models import BoothSession
from tests.conftest import image_bytes

PAGES = ["/", "/mockups/", "/history/"]


@pytest.fixture
def browser_client(db) -> Client:
    """A browser: cookies only, and CSRF enforced as for real."""
    return Client(enforce_csrf_checks=True)


def page_session(client: Client, path: str = "/") -> tuple[str, str]:
    """Open a page; return the booth session id it uses and the CSRF token it set."""
    response = client.get(path)
    assert response.status_code == 200
    config = response.context["client_config"]
    return config["sessionId"], client.cookies["csrftoken"].value


def create_mockup(client: Client, csrf: str) -> dict:
    image = SimpleUploadedFile("design.png", image_bytes("PNG"), "image/png")
    upload = client.post("/api/uploads", {"image": image}, headers={"X-CSRFToken": csrf})
    assert upload.status_code == 201, upload.content
    body = {"clientAppId": "page-views-mockups", "kind": "mockup", "productId": 71,
            "uploadId": upload.json()["uploadId"], "variantIds": [7100, 7105]}  # fmt: skip
    created = client.post("/api/tasks", body, content_type="application/json",
                          headers={"X-CSRFToken": csrf})  # fmt: skip
    assert created.status_code == 202, created.content
    return created.json()


@pytest.mark.parametrize("path", PAGES)
def test_a_first_visit_starts_one_booth_session_and_sets_the_csrf_cookie(browser_client, path):
    session_id, csrf = page_session(browser_client, path)
    assert csrf
    assert BoothSession.objects.filter(pk=session_id).exists()
    assert page_session(browser_client, "/")[0] == session_id, "the next page keeps it"
    assert BoothSession.objects.count() == 1


def test_the_api_accepts_the_session_and_csrf_token_a_page_set(browser_client):
    _, csrf = page_session(browser_client)
    image = SimpleUploadedFile("me.jpg", image_bytes(), "image/jpeg")
    refused = browser_client.post("/api/uploads", {"image": image})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    image.seek(0)
    accepted = browser_client.post("/api/uploads", {"image": image}, headers={"X-CSRFToken": csrf})
    assert accepted.status_code == 201


def test_the_pages_carry_what_their_scripts_need(browser_client):
    response = browser_client.get("/")
    config = response.context["client_config"]
    assert set(config) >= {"sessionId", "headCursor", "heartbeatSeconds", "uploadMaxBytes"}
    html = response.content.decode()
    assert 'id="client-config"' in html and "/static/js/booth.js" in html
    assert html.count('name="style"') == 10
    assert 'max="16"' in html


def test_the_mockup_result_page_shows_every_variant(browser_client):
    _, csrf = page_session(browser_client, "/mockups/")
    task = create_mockup(browser_client, csrf)
    response = browser_client.get(f"/mockups/{task['taskId']}/")
    assert response.status_code == 200
    card = response.context["card"]
    assert card.title == "Unisex Classic T-Shirt · front"
    assert [image.label for image in card.images] == ["White / S", "Black / M"]
    assert response.context["live"] is True, "it follows the task until it is done"


def test_another_sessions_mockup_page_is_not_found(browser_client):
    _, csrf = page_session(browser_client, "/mockups/")
    task = create_mockup(browser_client, csrf)
    stranger = Client()
    response = stranger.get(f"/mockups/{task['taskId']}/")
    assert response.status_code == 404
    assert "can't find that mockup" in response.content.decode()
    assert stranger.get("/history/").context["cards"] == []


def test_history_lists_the_sessions_tasks_newest_first(browser_client):
    _, csrf = page_session(browser_client, "/mockups/")
    first = create_mockup(browser_client, csrf)
    second = create_mockup(browser_client, csrf)
    cards = browser_client.get("/history/").context["cards"]
    assert [card.task_id for card in cards] == [second["taskId"], first["taskId"]]
    assert cards[0].status_label == "In queue"
