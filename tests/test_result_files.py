"""Result files are served at capability URLs; nothing else under /media/ is."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client

from jobs_app.files import new_result_name
from jobs_app.models import Job
from tests.conftest import generation_body, image_bytes

pytestmark = pytest.mark.django_db


def test_a_result_is_served_without_credentials_at_the_url_the_api_gives(owner, uploaded):
    task = owner.create_task(generation_body(uploaded["uploadId"])).json()
    png = image_bytes("PNG", (32, 32))
    name = default_storage.save(new_result_name("png"), ContentFile(png))
    Job.objects.filter(pk=task["jobs"][0]["jobId"]).update(
        status="completed", result_file=name, result_width=32, result_height=32,
        result_content_type="image/png", result_size=len(png),
    )  # fmt: skip
    result = owner.get(f"/api/tasks/{task['taskId']}").json()["jobs"][0]["result"]
    assert result == {"url": f"/media/{name}", "width": 32, "height": 32,
                      "contentType": "image/png", "size": len(png)}  # fmt: skip
    response = Client().get(result["url"])
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "immutable" in response["Cache-Control"]
    assert b"".join(response.streaming_content) == png


def test_result_names_carry_128_bits_of_randomness():
    names = {new_result_name("png") for _ in range(100)}
    assert len(names) == 100
    assert all(len(n.removeprefix("results/").removesuffix(".png")) == 32 for n in names)


@pytest.mark.parametrize(
    "path",
    [
        "/media/results/",
        "/media/results/0123456789abcdef0123456789abcdef.png",  # well-formed, absent
        "/media/results/..%2Fsecret_key",
        "/media/results/short.png",
    ],
)
def test_it_lists_nothing(path, owner, uploaded):
    response = Client().get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


class TestSignedUploadUrls:
    """The upstream fetches uploads through signed URLs that expire within an hour."""

    def test_a_signed_url_serves_the_upload_without_credentials(self, owner, uploaded):
        from jobs_app.files import signed_upload_url
        from jobs_app.models import Upload

        url = signed_upload_url(Upload.objects.get(pk=uploaded["uploadId"]))
        assert url.startswith("http://127.0.0.1:8000/media/uploads/")
        response = Client().get(url.removeprefix("http://127.0.0.1:8000"))
        assert response.status_code == 200
        assert response["Content-Type"] == "image/jpeg"
        assert len(b"".join(response.streaming_content)) == uploaded["size"]

    @pytest.mark.parametrize("token", ["0123456789abcdef0123456789abcdef.jpg", "e30:abc:def"])
    def test_an_unsigned_or_tampered_url_is_403(self, token, owner, uploaded):
        response = Client().get(f"/media/uploads/{token}")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"

    def test_an_expired_url_is_403(self, owner, uploaded):
        from unittest import mock

        from jobs_app.files import signed_upload_url
        from jobs_app.models import Upload

        with mock.patch("django.core.signing.time.time", return_value=1_000_000_000):
            url = signed_upload_url(Upload.objects.get(pk=uploaded["uploadId"]))
        response = Client().get(url.removeprefix("http://127.0.0.1:8000"))
        assert response.status_code == 403
        assert "expired" in response.json()["error"]["message"]
