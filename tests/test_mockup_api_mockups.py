"""Mockup tasks of the built-in mockup API: one design on every variant x placement."""

from __future__ import annotations

import io

from PIL import Image

pytest_plugins = ["tests.mockup_fixtures"]

TASKS = "/mockup-api/v2/mockup-tasks"


def entry(url: str, product: int, variants: list[int], placements: list[str]) -> dict:
    return {
        "catalog_product_id": product,
        "catalog_variant_ids": variants,
        "placements": [
            {"placement": p, "layers": [{"type": "file", "url": url}]} for p in placements
        ],
    }


async def finished_webhooks(receiver, count: int) -> dict[str, dict]:
    """Wait for `count` mockup_task_finished webhooks; return their tasks by id."""
    posts = await receiver.wait_for_posts(count)
    bodies = [receiver.verify(post) for post in posts]
    assert {body["type"] for body in bodies} == {"mockup_task_finished"}
    return {body["data"]["id"]: body["data"] for body in bodies}


class TestMockups:
    async def test_it_renders_every_variant_and_placement_then_calls_the_webhook(
        self, mockup_api, image_server, webhook_receiver
    ):
        design = image_server.url("/photo.jpg")
        body = {
            "format": "png",
            "products": [
                entry(design, 71, [7100, 7104], ["front", "back"]),
                entry(design, 19, [1900], ["front"]),
            ],
        }
        response = await mockup_api.post(TASKS, body)
        assert response.status_code == 201
        created = response.json()["data"]
        assert [task["status"] for task in created] == ["pending", "pending"]
        assert all(task["id"].startswith("mt_") for task in created)

        by_id = await finished_webhooks(webhook_receiver, 2)
        shirt = by_id[created[0]["id"]]
        assert shirt["status"] == "completed"
        assert shirt["failure_reasons"] == []
        assert [v["catalog_variant_id"] for v in shirt["catalog_variant_mockups"]] == [7100, 7104]
        assert [m["placement"] for m in shirt["catalog_variant_mockups"][0]["mockups"]] == [
            "front",
            "back",
        ]

        ids = ",".join(task["id"] for task in created)
        listed = (await mockup_api.get(TASKS, id=ids)).json()["data"]
        assert [task["id"] for task in listed] == [task["id"] for task in created]
        assert listed[0]["catalog_variant_mockups"] == shirt["catalog_variant_mockups"]
        mug_url = listed[1]["catalog_variant_mockups"][0]["mockups"][0]["mockup_url"]
        image = Image.open(io.BytesIO((await mockup_api.download(mug_url)).content))
        assert (image.format, image.size) == ("PNG", (1000, 1000))

    async def test_listing_leaves_out_unknown_ids(self, mockup_api):
        response = await mockup_api.get(TASKS, id="mt_nope,mt_other")
        assert response.status_code == 200
        assert response.json() == {"data": []}

    async def test_a_pending_task_lists_as_pending(self, mockup_api, image_server, settings):
        settings.MOCKUP_API_STEP_SECONDS = 1  # long enough to look before it ends
        body = {"products": [entry(image_server.url("/photo.jpg"), 19, [1900], ["front"])]}
        created = (await mockup_api.post(TASKS, body)).json()["data"][0]
        listed = (await mockup_api.get(TASKS, id=created["id"])).json()["data"]
        assert listed[0]["status"] == "pending"
        assert listed[0]["catalog_variant_mockups"] == []

    async def test_an_unavailable_design_fails_the_task(
        self, mockup_api, image_server, webhook_receiver
    ):
        body = {"products": [entry(image_server.url("/gone.png"), 19, [1900], ["front"])]}
        created = (await mockup_api.post(TASKS, body)).json()["data"][0]
        task = (await finished_webhooks(webhook_receiver, 1))[created["id"]]
        assert task["status"] == "failed"
        assert task["failure_reasons"][0]["code"] == "input_unavailable"

    async def test_failure_rate_one_fails_the_task_with_reasons(
        self, mockup_api, image_server, webhook_receiver, settings
    ):
        settings.MOCKUP_API_FAILURE_RATE = 1.0
        body = {"products": [entry(image_server.url("/photo.jpg"), 84, [8400, 8401], ["front"])]}
        created = (await mockup_api.post(TASKS, body)).json()["data"][0]
        task = (await finished_webhooks(webhook_receiver, 1))[created["id"]]
        assert task["status"] == "failed"
        assert [(r["code"], r["catalog_variant_id"]) for r in task["failure_reasons"]] == [
            ("render_failed", 8400),
            ("render_failed", 8401),
        ]
        assert task["catalog_variant_mockups"] == []
