"""The built-in mockup API's REST surface: auth, rate limits, catalog, validation, files."""

from __future__ import annotations

import io
import os
import time

import pytest
from PIL import Image

from mockup_api import files, render_jobs
from mockup_api.catalog import CATALOG_PRODUCTS
from mockup_api.ratelimit import limiter

pytest_plugins = ["tests.mockup_fixtures"]

CATALOG = "/mockup-api/v2/catalog-products"


class TestAuth:
    async def test_it_refuses_a_request_without_a_key(self, mockup_api):
        response = await mockup_api.anonymous.get(CATALOG)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.json()["error"]["message"]

    async def test_it_refuses_a_wrong_key(self, mockup_api):
        response = await mockup_api.anonymous.get(CATALOG, headers={"Authorization": "Bearer no"})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"

    async def test_it_reads_the_key_at_call_time(self, mockup_api, settings):
        settings.MOCKUP_API_KEY = "rotated"
        assert (await mockup_api.get(CATALOG)).status_code == 401
        rotated = await mockup_api.anonymous.get(
            CATALOG, headers={"Authorization": "Bearer rotated"}
        )
        assert rotated.status_code == 200


class TestRateLimit:
    async def test_every_response_reports_the_bucket(self, mockup_api, settings):
        settings.MOCKUP_API_RATE_LIMIT = 5
        settings.MOCKUP_API_RATE_WINDOW_SECONDS = 60
        response = await mockup_api.get(CATALOG)
        assert response["X-Ratelimit-Policy"] == "5;w=60"
        assert response["X-Ratelimit-Limit"] == "5"
        assert response["X-Ratelimit-Remaining"] == "4"
        assert int(response["X-Ratelimit-Reset"]) == 12  # one token back takes 60 / 5 s
        not_found = await mockup_api.get("/mockup-api/v2/generation-tasks/gt_nope")
        assert not_found.status_code == 404
        assert not_found["X-Ratelimit-Remaining"] == "3"

    async def test_it_answers_429_with_retry_after_once_the_bucket_is_empty(
        self, mockup_api, settings
    ):
        settings.MOCKUP_API_RATE_LIMIT = 3
        settings.MOCKUP_API_RATE_WINDOW_SECONDS = 30
        for _ in range(3):
            assert (await mockup_api.get(CATALOG)).status_code == 200
        response = await mockup_api.get(CATALOG)
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response["Retry-After"]) in range(1, 11)
        assert response["X-Ratelimit-Remaining"] == "0"

    async def test_the_bucket_refills_evenly_over_the_window(
        self, mockup_api, settings, monkeypatch
    ):
        settings.MOCKUP_API_RATE_LIMIT = 2
        settings.MOCKUP_API_RATE_WINDOW_SECONDS = 10
        clock = [1000.0]
        monkeypatch.setattr(limiter, "timer", lambda: clock[0])
        for _ in range(2):
            assert (await mockup_api.get(CATALOG)).status_code == 200
        refused = await mockup_api.get(CATALOG)
        assert refused.status_code == 429
        assert refused["Retry-After"] == "5"
        clock[0] += 5  # one token's worth
        assert (await mockup_api.get(CATALOG)).status_code == 200
        assert (await mockup_api.get(CATALOG)).status_code == 429

    async def test_unauthenticated_calls_spend_no_tokens(self, mockup_api, settings):
        settings.MOCKUP_API_RATE_LIMIT = 1
        for _ in range(3):
            assert (await mockup_api.anonymous.get(CATALOG)).status_code == 401
        assert (await mockup_api.get(CATALOG)).status_code == 200


class TestCatalog:
    async def test_it_returns_the_catalog_in_the_upstream_shape(self, mockup_api):
        data = (await mockup_api.get(CATALOG)).json()["data"]
        assert [product["id"] for product in data] == [p["id"] for p in CATALOG_PRODUCTS]
        product = data[0]
        assert set(product) >= {"id", "name", "type", "variants", "placements"}
        assert set(product["variants"][0]) >= {"id", "name", "color", "size"}
        assert set(product["placements"][0]["print_area"]) == {"width", "height", "top", "left"}

    async def test_it_refuses_other_methods(self, mockup_api):
        response = await mockup_api.post(CATALOG, {})
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"


class TestValidation:
    TASKS = "/mockup-api/v2/generation-tasks"

    async def test_it_lists_every_invalid_generation_field(self, mockup_api):
        body = {"style": "nope", "number_images": 17, "seed": "x", "image_url": "ftp://x/y"}
        response = await mockup_api.post(self.TASKS, body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert set(error["details"]["fields"]) == {
            "app_id",
            "style",
            "number_images",
            "seed",
            "image_url",
        }

    @pytest.mark.parametrize("number_images", [0, 17, True, 2.0])
    async def test_it_refuses_a_number_of_images_out_of_range(self, mockup_api, number_images):
        body = {
            "app_id": "booth",
            "style": "pop-art",
            "number_images": number_images,
            "image_url": "http://127.0.0.1:9/x.jpg",
        }
        response = await mockup_api.post(self.TASKS, body)
        assert response.status_code == 400
        assert "number_images" in response.json()["error"]["details"]["fields"]

    async def test_an_enhancement_needs_no_style(self, mockup_api, image_server):
        body = {
            "app_id": "booth",
            "kind": "enhancement",
            "image_url": image_server.url("/photo.jpg"),
        }
        response = await mockup_api.post(self.TASKS, body)
        assert response.status_code == 201
        assert response.json()["data"]["number_images"] == 1

    async def test_it_refuses_a_body_that_is_not_json(self, mockup_api):
        response = await mockup_api.client.post(
            self.TASKS, "{", content_type="application/json", headers=mockup_api.auth
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"

    @pytest.mark.parametrize(
        ("entry", "field"),
        [
            ({"catalog_product_id": 999}, "products[0].catalog_product_id"),
            ({"catalog_product_id": 71, "catalog_variant_ids": [1900]}, "catalog_variant_ids"),
            ({"catalog_product_id": 71, "catalog_variant_ids": []}, "catalog_variant_ids"),
            (
                {
                    "catalog_product_id": 19,
                    "catalog_variant_ids": [1900],
                    "placements": [{"placement": "back", "layers": []}],
                },
                "products[0].placements[0].placement",
            ),
            (
                {
                    "catalog_product_id": 19,
                    "catalog_variant_ids": [1900],
                    "placements": [{"placement": "front", "layers": [{"type": "file"}]}],
                },
                "products[0].placements[0].layers",
            ),
        ],
    )
    async def test_it_checks_mockup_requests_against_the_catalog(self, mockup_api, entry, field):
        response = await mockup_api.post("/mockup-api/v2/mockup-tasks", {"products": [entry]})
        assert response.status_code == 400
        fields = response.json()["error"]["details"]["fields"]
        assert any(name.endswith(field) for name in fields), fields

    async def test_it_needs_ids_to_list_mockup_tasks(self, mockup_api):
        response = await mockup_api.get("/mockup-api/v2/mockup-tasks")
        assert response.status_code == 400


class TestTasks:
    async def test_an_unknown_task_is_404(self, mockup_api):
        for method in (mockup_api.get, mockup_api.delete):
            response = await method("/mockup-api/v2/generation-tasks/gt_unknown")
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"

    async def test_a_new_task_is_pending_with_string_ids(self, mockup_api, image_server):
        task = await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=3)
        assert task["status"] == "pending"
        assert task["id"].startswith("gt_")
        assert task["created_at"].endswith("Z")
        assert task["finished_at"] is None
        assert [job["index"] for job in task["jobs"]] == [0, 1, 2]
        assert all(job["id"].startswith("gj_") for job in task["jobs"])
        assert all(job["status"] == "queued" for job in task["jobs"])

    async def test_a_task_without_a_seed_gets_one(self, mockup_api, image_server):
        task = await mockup_api.create_generation(image_server.url("/photo.jpg"), seed=None)
        assert isinstance(task["seed"], int)


class TestFiles:
    def _hosted(self) -> str:
        name, _ = render_jobs.save_png(Image.new("RGB", (8, 4), "red"), files.storage_dir())
        return name

    async def test_it_serves_a_hosted_file_without_auth(self, mockup_api):
        name = self._hosted()
        response = await mockup_api.anonymous.get(f"/mockup-api/v2/files/{name}")
        assert response.status_code == 200
        assert response["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (8, 4)

    async def test_an_unknown_file_is_404(self, mockup_api):
        response = await mockup_api.anonymous.get(f"/mockup-api/v2/files/{'a' * 32}.png")
        assert response.status_code == 404

    async def test_an_expired_file_is_404_and_deleted(self, mockup_api, settings):
        name = self._hosted()
        path = files.storage_dir() / name
        past = time.time() - settings.MOCKUP_API_RESULT_TTL_SECONDS - 1
        os.utime(path, (past, past))
        response = await mockup_api.anonymous.get(f"/mockup-api/v2/files/{name}")
        assert response.status_code == 404
        assert not path.exists()

    async def test_a_sweep_deletes_only_expired_files(self, mockup_api, settings):
        old, fresh = self._hosted(), self._hosted()
        past = time.time() - settings.MOCKUP_API_RESULT_TTL_SECONDS - 1
        os.utime(files.storage_dir() / old, (past, past))
        assert files.sweep() == 1
        assert not (files.storage_dir() / old).exists()
        assert (files.storage_dir() / fresh).exists()

    async def test_files_live_under_media_root(self, mockup_api, settings):
        name = self._hosted()
        assert (settings.MEDIA_ROOT / "mockup-api" / name).is_file()
