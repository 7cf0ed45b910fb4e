"""Idempotency keys of the built-in mockup API's creating POSTs, and the creation counts."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx

from mockup_api import store as store_module

pytest_plugins = ["tests.mockup_fixtures"]

GENERATIONS = "/mockup-api/v2/generation-tasks"
MOCKUPS = "/mockup-api/v2/mockup-tasks"
STATS = "/mockup-api/v2/debug/stats"


def generation_body(image_url: str, **fields: Any) -> dict[str, Any]:
    return {
        "app_id": "booth",
        "kind": "generation",
        "style": "pop-art",
        "number_images": 1,
        "seed": 7,
        "image_url": image_url,
        **fields,
    }


def mockup_body(image_url: str, products: list[int]) -> dict[str, Any]:
    variants = {19: [1900], 71: [7100]}
    return {
        "format": "png",
        "products": [
            {
                "catalog_product_id": product,
                "catalog_variant_ids": variants[product],
                "placements": [
                    {"placement": "front", "layers": [{"type": "file", "url": image_url}]}
                ],
            }
            for product in products
        ],
    }


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def stats(api) -> dict[str, Any]:
    response = await api.get(STATS)
    assert response.status_code == 200, response.content
    return response.json()


class TestGenerationTasks:
    async def test_a_repeated_key_returns_the_first_task_and_creates_nothing_new(
        self, mockup_api, image_server
    ):
        body = generation_body(image_server.url("/photo.jpg"))
        first = await mockup_api.post(GENERATIONS, body, keyed("task-1"))
        again = await mockup_api.post(GENERATIONS, body, keyed("task-1"))

        assert first.status_code == again.status_code == 201
        assert again.content == first.content  # the first response, byte for byte
        assert again["Idempotent-Replayed"] == "true"
        assert not first.has_header("Idempotent-Replayed")
        assert again.json()["data"]["status"] == "pending"  # as it was, not as it is now
        assert list(store_module.store.generation) == [first.json()["data"]["id"]]
        counts = await stats(mockup_api)
        assert counts["generationTasksCreated"] == 1
        assert counts["idempotentReplays"] == 1
        assert counts["createdByKey"] == {"task-1": 1}

    async def test_a_key_reused_with_another_body_is_422_and_creates_nothing(
        self, mockup_api, image_server
    ):
        url = image_server.url("/photo.jpg")
        await mockup_api.post(GENERATIONS, generation_body(url), keyed("task-1"))
        response = await mockup_api.post(GENERATIONS, generation_body(url, seed=8), keyed("task-1"))

        assert response.status_code == 422
        assert response.json()["error"]["code"] == "idempotency_key_reused"
        assert response.json()["error"]["message"]
        counts = await stats(mockup_api)
        assert counts["generationTasksCreated"] == 1
        assert counts["idempotentReplays"] == 0
        assert counts["createdByKey"] == {"task-1": 1}

    async def test_a_key_reused_on_the_other_creating_endpoint_is_422(
        self, mockup_api, image_server
    ):
        url = image_server.url("/photo.jpg")
        await mockup_api.post(GENERATIONS, generation_body(url), keyed("task-1"))
        response = await mockup_api.post(MOCKUPS, mockup_body(url, [19]), keyed("task-1"))
        assert response.status_code == 422
        assert (await stats(mockup_api))["mockupTasksCreated"] == 0

    async def test_concurrent_requests_with_one_key_create_one_task(self, mockup_api, image_server):
        body = generation_body(image_server.url("/photo.jpg"))
        responses = await asyncio.gather(
            *(mockup_api.post(GENERATIONS, body, keyed("task-1")) for _ in range(5))
        )

        assert {r.status_code for r in responses} == {201}
        assert len({r.content for r in responses}) == 1
        assert sum(r.has_header("Idempotent-Replayed") for r in responses) == 4
        assert len(store_module.store.generation) == 1
        counts = await stats(mockup_api)
        assert counts["generationTasksCreated"] == 1
        assert counts["idempotentReplays"] == 4
        assert counts["createdByKey"] == {"task-1": 1}

    async def test_requests_without_a_key_each_create_a_task(self, mockup_api, image_server):
        body = generation_body(image_server.url("/photo.jpg"))
        first = await mockup_api.post(GENERATIONS, body)
        second = await mockup_api.post(GENERATIONS, body)

        assert first.status_code == second.status_code == 201
        assert first.json()["data"]["id"] != second.json()["data"]["id"]
        assert not second.has_header("Idempotent-Replayed")
        counts = await stats(mockup_api)
        assert counts["generationTasksCreated"] == 2
        assert counts["createdByKey"] == {}

    async def test_a_key_longer_than_255_characters_is_400_and_creates_nothing(
        self, mockup_api, image_server
    ):
        body = generation_body(image_server.url("/photo.jpg"))
        response = await mockup_api.post(GENERATIONS, body, keyed("k" * 256))
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert "Idempotency-Key" in error["details"]["headers"]
        assert (await stats(mockup_api))["generationTasksCreated"] == 0

        accepted = await mockup_api.post(GENERATIONS, body, keyed("k" * 255))
        assert accepted.status_code == 201

    async def test_a_request_that_fails_validation_leaves_its_key_unused(
        self, mockup_api, image_server
    ):
        url = image_server.url("/photo.jpg")
        refused = await mockup_api.post(
            GENERATIONS, generation_body(url, style="nope"), keyed("task-1")
        )
        assert refused.status_code == 400
        assert store_module.store.idempotency == {}

        fixed = await mockup_api.post(GENERATIONS, generation_body(url), keyed("task-1"))
        assert fixed.status_code == 201
        assert not fixed.has_header("Idempotent-Replayed")
        assert (await stats(mockup_api))["createdByKey"] == {"task-1": 1}

    async def test_a_key_is_forgotten_after_24_hours(self, mockup_api, image_server, monkeypatch):
        body = generation_body(image_server.url("/photo.jpg"))
        first = await mockup_api.post(GENERATIONS, body, keyed("task-1"))
        later = store_module.now() + timedelta(hours=24, seconds=1)
        monkeypatch.setattr(store_module, "now", lambda: later)

        second = await mockup_api.post(GENERATIONS, body, keyed("task-1"))

        assert second.status_code == 201
        assert not second.has_header("Idempotent-Replayed")
        assert second.json()["data"]["id"] != first.json()["data"]["id"]
        assert len(store_module.store.idempotency) == 1  # the old entry was pruned
        # Counted per key since start, so a reuse after the window still shows.
        assert (await stats(mockup_api))["createdByKey"] == {"task-1": 2}

    async def test_keys_are_scoped_to_the_api_key(self, mockup_api, image_server, settings):
        body = generation_body(image_server.url("/photo.jpg"))
        first = await mockup_api.post(GENERATIONS, body, keyed("task-1"))
        settings.MOCKUP_API_KEY = "another-account-key"
        other = {"Authorization": "Bearer another-account-key"}
        response = await mockup_api.client.post(
            GENERATIONS,
            body,
            content_type="application/json",
            headers={**other, **keyed("task-1")},
        )

        assert response.status_code == 201
        assert response.json()["data"]["id"] != first.json()["data"]["id"]
        own = await mockup_api.client.get(STATS, headers=other)
        assert own.json()["createdByKey"] == {"task-1": 1}
        assert own.json()["generationTasksCreated"] == 2


class TestMockupTasks:
    async def test_a_repeated_key_returns_the_same_mockup_tasks(self, mockup_api, image_server):
        body = mockup_body(image_server.url("/photo.jpg"), [19, 71])
        first = await mockup_api.post(MOCKUPS, body, keyed("task-2"))
        again = await mockup_api.post(MOCKUPS, body, keyed("task-2"))

        assert first.status_code == again.status_code == 201
        assert again.content == first.content
        assert again["Idempotent-Replayed"] == "true"
        assert len(first.json()["data"]) == 2
        assert len(store_module.store.mockup) == 2
        counts = await stats(mockup_api)
        assert counts["mockupTasksCreated"] == 2
        assert counts["idempotentReplays"] == 1
        assert counts["createdByKey"] == {"task-2": 2}

    async def test_a_mockup_key_reused_with_another_body_is_422(self, mockup_api, image_server):
        url = image_server.url("/photo.jpg")
        await mockup_api.post(MOCKUPS, mockup_body(url, [19]), keyed("task-2"))
        response = await mockup_api.post(MOCKUPS, mockup_body(url, [71]), keyed("task-2"))
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "idempotency_key_reused"
        assert (await stats(mockup_api))["mockupTasksCreated"] == 1

    async def test_concurrent_mockup_requests_with_one_key_create_the_tasks_once(
        self, mockup_api, image_server
    ):
        body = mockup_body(image_server.url("/photo.jpg"), [19, 71])
        responses = await asyncio.gather(
            *(mockup_api.post(MOCKUPS, body, keyed("task-2")) for _ in range(3))
        )
        assert len({r.content for r in responses}) == 1
        assert (await stats(mockup_api))["createdByKey"] == {"task-2": 2}

    async def test_mockup_requests_without_a_key_each_create_tasks(self, mockup_api, image_server):
        body = mockup_body(image_server.url("/photo.jpg"), [19])
        first = await mockup_api.post(MOCKUPS, body)
        second = await mockup_api.post(MOCKUPS, body)
        assert first.json()["data"][0]["id"] != second.json()["data"][0]["id"]
        assert (await stats(mockup_api))["mockupTasksCreated"] == 2


class TestStats:
    async def test_the_stats_endpoint_needs_the_api_key(self, mockup_api):
        assert (await mockup_api.anonymous.get(STATS)).status_code == 401

    async def test_the_stats_endpoint_spends_no_tokens(self, mockup_api, settings):
        settings.MOCKUP_API_RATE_LIMIT = 1
        for _ in range(3):
            response = await mockup_api.get(STATS)
            assert response.status_code == 200
            assert not response.has_header("X-Ratelimit-Remaining")
        assert (await mockup_api.get("/mockup-api/v2/catalog-products")).status_code == 200

    async def test_it_starts_at_zero(self, mockup_api):
        assert await stats(mockup_api) == {
            "generationTasksCreated": 0,
            "mockupTasksCreated": 0,
            "idempotentReplays": 0,
            "createdByKey": {},
        }


async def test_a_separate_process_counts_each_keyed_creation_once(standalone_mockup_api):
    api = standalone_mockup_api
    body = generation_body(api.images.url("/photo.jpg"), app_id="live-idempotency")
    headers = {**api.auth, **keyed("task-live")}
    async with httpx.AsyncClient() as client:
        responses = await asyncio.gather(
            *(client.post(f"{api.base}{GENERATIONS}", headers=headers, json=body) for _ in range(4))
        )
        counts = (await client.get(f"{api.base}{STATS}", headers=api.auth)).json()
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["data"]["id"] for r in responses}) == 1
    assert [r.headers.get("Idempotent-Replayed") for r in responses].count("true") == 3
    assert counts["createdByKey"] == {"task-live": 1}
    assert counts["generationTasksCreated"] == 1
