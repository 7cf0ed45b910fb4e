"""POST /api/sessions, bearer tokens, the cookie with CSRF, and DELETE /api/sessions/current."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from sessions_app.models import AccessToken
from tests.conftest import generation_body

pytestmark = pytest.mark.django_db


def test_it_starts_a_session_with_token_cookie_and_csrf_cookie():
    client = Client()
    response = client.post("/api/sessions")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"sessionId", "token", "expiresAt"}
    assert body["token"].startswith("pbt_")
    assert body["expiresAt"].endswith("Z") and len(body["expiresAt"]) == 24
    assert "sessionid" in response.cookies and "csrftoken" in response.cookies


def test_it_stores_only_the_digest_of_the_token():
    body = Client().post("/api/sessions").json()
    assert not AccessToken.objects.filter(digest=body["token"]).exists()
    assert AccessToken.objects.filter(digest=AccessToken.digest_of(body["token"])).exists()


def test_it_answers_401_no_session_without_cookie_or_token():
    response = Client().post("/api/tasks", {}, content_type="application/json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "no_session"
    response = Client().get("/api/tasks")
    assert response.status_code == 401


def test_it_answers_401_invalid_token_for_an_unknown_token():
    response = Client().get("/api/tasks", headers={"Authorization": "Bearer pbt_nope"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_an_expired_token(owner):
    AccessToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = owner.get("/api/tasks")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_it_revokes_the_calling_token(owner):
    assert (
        owner.client.delete(
            "/api/sessions/current", headers={"Authorization": f"Bearer {owner.token}"}
        ).status_code
        == 204
    )
    response = owner.get("/api/tasks")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_it_judges_a_bearer_request_by_the_token_alone(uploaded, owner):
    """A valid cookie plus a bad token is refused; a token plus a foreign cookie needs no CSRF."""
    browser = Client(enforce_csrf_checks=True)
    browser.post("/api/sessions")
    response = browser.get("/api/tasks", headers={"Authorization": "Bearer pbt_bad"})
    assert response.status_code == 401
    response = browser.post(
        "/api/tasks",
        generation_body(uploaded["uploadId"]),
        content_type="application/json",
        headers={"Authorization": f"Bearer {owner.token}"},
    )
    assert response.status_code == 202, response.content
    assert response.json()["clientAppId"] == "booth-1"


class TestCookieClients:
    def _browser(self) -> Client:
        browser = Client(enforce_csrf_checks=True)
        assert browser.post("/api/sessions").status_code == 201
        return browser

    def test_it_lets_a_cookie_client_read_without_csrf(self):
        browser = self._browser()
        response = browser.get("/api/tasks")
        assert response.status_code == 200
        assert response.json() == {"results": [], "next": None}

    def test_it_refuses_a_cookie_write_without_the_csrf_token(self):
        browser = self._browser()
        response = browser.post("/api/tasks", {}, content_type="application/json")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "csrf_failed"

    def test_it_accepts_a_cookie_write_with_the_csrf_token(self):
        browser = self._browser()
        token = browser.cookies["csrftoken"].value
        response = browser.post(
            "/api/tasks",
            {"clientAppId": "cookie-booth", "kind": "generation"},
            content_type="application/json",
            headers={"X-CSRFToken": token},
        )
        # Past CSRF: the body is judged (and found incomplete).
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"

    def test_it_forgets_the_session_when_a_cookie_client_leaves(self):
        browser = self._browser()
        token = browser.cookies["csrftoken"].value
        response = browser.delete("/api/sessions/current", headers={"X-CSRFToken": token})
        assert response.status_code == 204
        assert browser.get("/api/tasks").status_code == 401
