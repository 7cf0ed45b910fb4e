"""Webhooks of the built-in mockup API: signed, retried with the same id, fault knobs."""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import WebhookVerificationError

pytest_plugins = ["tests.mockup_fixtures"]


class TestGenerationWebhooks:
    async def test_each_job_and_then_the_task_are_announced(
        self, mockup_api, image_server, webhook_receiver
    ):
        task = await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=2)
        posts = await webhook_receiver.wait_for_posts(3)
        bodies = [webhook_receiver.verify(post) for post in posts]

        assert [body["type"] for body in bodies] == [
            "generation_job_progress",
            "generation_job_progress",
            "generation_task_finished",
        ]
        finished = bodies[-1]["data"]
        assert finished["id"] == task["id"]
        assert finished["status"] == "completed"
        assert all(job["result"]["url"] for job in finished["jobs"])
        assert bodies[-1]["timestamp"].endswith("Z")
        assert len({post.headers["webhook-id"] for post in posts}) == 3
        assert all(post.headers["webhook-id"].startswith("msg_") for post in posts)
        assert all(post.headers["Content-Type"] == "application/json" for post in posts)
        assert all(post.path == "/webhooks/mockup-api" for post in posts)

    async def test_a_cancelled_task_is_announced_as_cancelled(
        self, mockup_api, image_server, webhook_receiver, settings
    ):
        settings.MOCKUP_API_STEP_SECONDS = 0.05
        task = await mockup_api.create_generation(image_server.url("/photo.jpg"))
        await mockup_api.delete(f"/mockup-api/v2/generation-tasks/{task['id']}")
        body = webhook_receiver.verify((await webhook_receiver.wait_for_posts(1))[0])
        assert body["type"] == "generation_task_finished"
        assert body["data"]["status"] == "cancelled"

    async def test_signatures_use_the_first_secret(
        self, mockup_api, image_server, webhook_receiver, settings
    ):
        usual = settings.WEBHOOK_SECRETS[0]
        other = "whsec_" + "b" * 43 + "="
        settings.WEBHOOK_SECRETS = [other, usual]
        await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
        post = (await webhook_receiver.wait_for_posts(1))[0]
        assert webhook_receiver.verify(post, other)
        with pytest.raises(WebhookVerificationError):
            webhook_receiver.verify(post, usual)


class TestRetries:
    async def test_a_failed_delivery_is_retried_with_the_same_id_and_body(
        self, mockup_api, image_server, webhook_receiver
    ):
        webhook_receiver.statuses = [500, 503]
        await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
        # Two job-progress attempts fail then land, the task webhook lands first time: 4 POSTs.
        posts = await webhook_receiver.wait_for_posts(4)
        by_id: dict[str, list] = {}
        for post in posts:
            by_id.setdefault(post.headers["webhook-id"], []).append(post)
        attempts = sorted(len(tries) for tries in by_id.values())
        assert attempts == [1, 3]
        retried = next(tries for tries in by_id.values() if len(tries) == 3)
        assert len({post.body for post in retried}) == 1
        for post in retried:
            assert webhook_receiver.verify(post)["type"] == "generation_job_progress"

    async def test_it_gives_up_after_six_attempts(self, mockup_api, image_server, webhook_receiver):
        webhook_receiver.statuses = [500] * 6
        await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
        posts = await webhook_receiver.wait_for_posts(7)  # 6 for the job, then the task's
        assert len({post.headers["webhook-id"] for post in posts[:6]}) == 1
        assert posts[6].headers["webhook-id"] != posts[0].headers["webhook-id"]

    async def test_an_unreachable_receiver_is_retried_too(self, mockup_api, image_server, settings):
        from mockup_api.webhooks import Delivery, deliver

        settings.MOCKUP_API_WEBHOOK_URL = "http://127.0.0.1:9/webhooks/mockup-api"  # discard port
        delivery = Delivery(msg_id="msg_1", type="generation_job_progress", body="{}")
        assert await deliver(delivery) is False


class TestFaultKnobs:
    async def test_duplicate_rate_one_delivers_every_webhook_twice_with_one_id(
        self, mockup_api, image_server, webhook_receiver, settings
    ):
        settings.MOCKUP_API_DUPLICATE_WEBHOOK_RATE = 1.0
        await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
        posts = await webhook_receiver.wait_for_posts(4)
        ids = [post.headers["webhook-id"] for post in posts]
        assert sorted(ids.count(i) for i in set(ids)) == [2, 2]
        assert all(webhook_receiver.verify(post) for post in posts)

    async def test_reordering_holds_job_webhooks_until_after_the_task_webhook(
        self, mockup_api, image_server, webhook_receiver, settings
    ):
        settings.MOCKUP_API_REORDER_WEBHOOKS = True
        await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=2)
        posts = await webhook_receiver.wait_for_posts(3)
        assert [webhook_receiver.verify(post)["type"] for post in posts] == [
            "generation_task_finished",
            "generation_job_progress",
            "generation_job_progress",
        ]

    async def test_no_webhook_url_sends_nothing(self, mockup_api, image_server, settings):
        settings.MOCKUP_API_WEBHOOK_URL = ""
        task = await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
        assert (await mockup_api.wait_for_task(task["id"]))["status"] == "completed"
