"""Many tasks of several clients through one server process and its one upstream socket."""

from __future__ import annotations

import pytest

from tests.upstream_helpers import (
    Booth,
    ConnectionWatch,
    UpstreamView,
    contract_problems,
    derived_api_key,
    fresh_var_dir,
    our_app_ids,
    result_problems,
    serve,
    wait_for,
)


@pytest.fixture
def var_dir(tmp_path):
    return fresh_var_dir(tmp_path / "var")


def test_concurrent_tasks_of_several_clients_share_one_socket_and_all_complete(var_dir):
    with serve(var_dir, MOCKUP_API_STEP_SECONDS="0.02") as server:
        upstream = UpstreamView(f"{server.base}/mockup-api", derived_api_key())
        photo, shop = Booth(server.base, "booth-photo"), Booth(server.base, "shop-b")
        photo_upload, shop_upload = photo.upload(), shop.upload()
        wait_for(lambda: our_app_ids(upstream), "our socket to connect")

        with ConnectionWatch(upstream) as watch:
            generation = photo.generation(photo_upload, number_images=16)
            mockups = [
                (photo, photo.mockup(photo_upload, [7100, 7105], client_app_id="shop-a")),
                (shop, shop.mockup(shop_upload, [1900, 1901, 1902], product_id=19)),
            ]
            first_done = photo.wait_for_event(generation, lambda e: e["type"] == "jobCompleted")
            source = next(
                job["jobId"]
                for job in photo.task(generation["taskId"])["jobs"]
                if job["index"] == first_done["jobIndex"]
            )
            enhancement = photo.enhancement(sourceJobId=source, client_app_id="booth-enhance")
            assert photo.task(generation["taskId"])["status"] == "running"

            everything = [(photo, generation), (photo, enhancement), *mockups]
            finished = [(booth, booth.wait_for_task(t["taskId"])) for booth, t in everything]
        final_connections = upstream.connections()

        assert [task["status"] for _, task in finished] == ["completed"] * 4, [
            (t["kind"], t["status"], t["error"]) for _, t in finished
        ]
        problems = []
        for booth, task in finished:
            problems += contract_problems(task, booth.events(task))
            problems += result_problems(booth, task)
        assert not problems, problems
        assert finished[1][1]["jobs"][0]["result"]["width"] == 2 * 768  # enhanced 2x

        # Exactly one socket for the whole run: never two at once, never a reconnection.
        assert watch.snapshots and not watch.errors, watch.errors
        assert {s["total"] for s in watch.snapshots} == {1}, watch.snapshots[:5]
        assert len({app for s in watch.snapshots for app in s["apps"]}) == 1
        assert final_connections["auth_count"] == 1
